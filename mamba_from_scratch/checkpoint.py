"""Checkpoints: one ``.npz`` holding the parameters, the config as JSON, and free-form extras.

Layout of the file:
    params/<name>    every parameter, by its official name
    arrays/<name>    optional extra arrays (optimizer moments, RNG state, ...)
    meta             a JSON string: {"config_class", "config", "extra"}

Writes are atomic (a temporary ``.tmp-*.npz`` in the same folder, then ``os.replace``), so
a run killed mid-save leaves the previous checkpoint intact. Only SIGKILL (or a power cut)
can leave the temporary behind; :func:`remove_stale_temporaries` deletes such leftovers and
the training command calls it when a run starts or resumes. Loading checks everything it
reads: a file that is not a checkpoint (truncated, another format, bad metadata, a config
or parameters that do not match) is a ValueError naming the path and the problem.

The config classes it knows are the models' (models.CONFIGS), imported here; the model
modules never import this one. The config's class name in the metadata picks the class, and
so the model: a softmax-attention checkpoint, whose parameters are named as a linear-attention
one's, loads as a SoftmaxTFConfig and runs softmax attention.

Tests: tests/test_models_reference.py (committed checkpoints), tests/test_reliability.py, tests/test_bad_input.py.
"""
from __future__ import annotations

import glob
import json
import os
import tempfile
import zipfile
import zlib

import numpy as np

from .models import CONFIGS
from .params import check_params, sub_params

CONFIG_CLASSES = {cls.__name__: cls for cls in CONFIGS}  # the name in a checkpoint's meta -> its class
TMP_PREFIX = ".tmp-"  # save_checkpoint's temporaries: <folder>/.tmp-XXXXXXXX.npz


def save_checkpoint(path, params, cfg, extra=None, arrays=None):
    """Atomically write ``params`` (dict of arrays), ``cfg`` (a model config, one of models.CONFIGS),
    ``extra`` (JSON-serialisable dict) and ``arrays`` (dict of arrays) to ``path``."""
    check_params(params, cfg)
    if type(cfg) not in CONFIGS:
        raise ValueError(f"cfg must be one of the model configs {sorted(CONFIG_CLASSES)}, got {type(cfg).__name__}")
    meta = {"config_class": type(cfg).__name__, "config": cfg.to_dict(), "extra": extra or {}}
    payload = {f"params/{k}": v for k, v in params.items()}
    payload.update({f"arrays/{k}": np.asarray(v) for k, v in (arrays or {}).items()})
    payload["meta"] = np.array(json.dumps(meta))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX, suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is an ordinary shareable file
        os.replace(tmp, path)
    except BaseException:
        # An interrupt (Ctrl-C) can land after os.replace has already moved tmp into place: the
        # checkpoint is then complete and tmp gone, and the interrupt must still propagate.
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(folder):
    """Delete the ``.tmp-*.npz`` files a killed :func:`save_checkpoint` left in ``folder``.

    Call it only where no other process is saving into the same folder (one run per
    folder). Returns the paths removed.
    """
    removed = []
    for tmp in sorted(glob.glob(os.path.join(glob.escape(os.fspath(folder)), TMP_PREFIX + "*.npz"))):
        try:
            os.unlink(tmp)
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


# What NumPy and zipfile raise for files that are not (complete) .npz archives.
_READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, ValueError, KeyError, TypeError)


def load_checkpoint(path):
    """Read a file written by :func:`save_checkpoint`.

    Returns:
        params (dict), cfg (the config dataclass), extra (dict), arrays (dict).
    Raises:
        ValueError naming the path if the file is missing, is not a complete checkpoint
        archive, has unreadable metadata, or its parameters do not match its config.
    """
    where = f"checkpoint {os.fspath(path)!r}"

    def bad(problem):
        return ValueError(f"{where}: {problem}")

    if not os.path.exists(path):
        raise bad("no such file")
    if os.path.isdir(path):
        raise bad("is a folder, not a file")
    try:
        f = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickled" in str(e):  # neither an .npz (zip) nor an .npy: NumPy would try pickle
            raise bad("is not a NumPy .npz archive (a text file or another format?)") from None
        raise bad(f"cannot be read as an .npz archive ({e})") from None
    except _READ_ERRORS as e:
        raise bad(f"cannot be read (truncated or not an .npz archive?): {type(e).__name__}: {e}") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise bad("is a single .npy array, not a checkpoint (.npz archive)")
    try:
        with f:
            if "meta" not in f.files:
                raise bad("is not a checkpoint: it has no 'meta' entry")
            meta_text = str(f["meta"])
            entries = {k: f[k] for k in f.files if k != "meta"}
            params, arrays = sub_params(entries, "params/"), sub_params(entries, "arrays/")
    except ValueError as e:
        if str(e).startswith(where):
            raise
        raise bad(f"has an entry that cannot be read ({e})") from None
    except _READ_ERRORS as e:
        raise bad(f"cannot be read (truncated?): {type(e).__name__}: {e}") from None
    try:
        meta = json.loads(meta_text)
    except json.JSONDecodeError as e:
        raise bad(f"its 'meta' entry is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise bad(f"its 'meta' entry must be a JSON object, got {type(meta).__name__}")
    for key, kind in (("config_class", str), ("config", dict), ("extra", dict)):
        if not isinstance(meta.get(key), kind):
            raise bad(f"its meta has no {kind.__name__} {key!r}")
    name = meta["config_class"]
    cls = CONFIG_CLASSES.get(name)
    if cls is None:
        raise bad(f"config_class {name!r} is not one of {sorted(CONFIG_CLASSES)}")
    try:
        cfg = cls(**meta["config"])
    except TypeError as e:
        raise bad(f"its {name} config does not fit the class ({e})") from None
    except ValueError as e:
        raise bad(f"its {name} config is invalid: {e}") from None
    try:
        check_params(params, cfg)
    except ValueError as e:
        raise bad(str(e)) from None
    return params, cfg, meta["extra"], arrays
