"""Checkpoints: one ``.npz`` holding the parameters, the config as JSON, and free-form extras.

Layout of the file:
    params/<name>    every parameter, by its official name
    arrays/<name>    optional extra arrays (optimizer moments, RNG state, ...)
    meta             a JSON string: {"config_class", "config", "extra"}

Writes are atomic (a temporary file in the same folder, then ``os.replace``), so a run
killed mid-save leaves the previous checkpoint intact. Loading checks every key and shape
against the config, so a file from another model size fails with a clear message.
"""
from __future__ import annotations

import importlib
import json
import os
import tempfile

import numpy as np

from .model import MambaConfig, check_params

CONFIG_CLASSES = {"MambaConfig": MambaConfig}
# The package's other model configs and the modules that register them, imported on demand
# so that load_checkpoint works without the caller importing the model's module first.
CONFIG_MODULES = {"LinearTFConfig": "mamba_from_scratch.linear_attention"}


def register_config(cls):
    """Let :func:`load_checkpoint` rebuild configs of another model class (a decorator)."""
    CONFIG_CLASSES[cls.__name__] = cls
    return cls


def save_checkpoint(path, params, cfg, extra=None, arrays=None):
    """Atomically write ``params`` (dict of arrays), ``cfg`` (a registered config dataclass),
    ``extra`` (JSON-serialisable dict) and ``arrays`` (dict of arrays) to ``path``."""
    check_params(params, cfg)
    if type(cfg).__name__ not in CONFIG_CLASSES:
        raise ValueError(f"cfg must be a registered config class, got {type(cfg).__name__}")
    meta = {"config_class": type(cfg).__name__, "config": cfg.to_dict(), "extra": extra or {}}
    payload = {f"params/{k}": v for k, v in params.items()}
    payload.update({f"arrays/{k}": np.asarray(v) for k, v in (arrays or {}).items()})
    payload["meta"] = np.array(json.dumps(meta))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is an ordinary shareable file
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_checkpoint(path):
    """Read a file written by :func:`save_checkpoint`.

    Returns:
        params (dict), cfg (the config dataclass), extra (dict), arrays (dict).
    Raises:
        ValueError if the file is not a checkpoint or its parameters do not match its config.
    """
    with np.load(path, allow_pickle=False) as f:
        if "meta" not in f.files:
            raise ValueError(f"path {path!r} is not a checkpoint: it has no 'meta' entry")
        meta = json.loads(str(f["meta"]))
        params = {k[7:]: f[k] for k in f.files if k.startswith("params/")}
        arrays = {k[7:]: f[k] for k in f.files if k.startswith("arrays/")}
    name = meta.get("config_class")
    if name not in CONFIG_CLASSES and name in CONFIG_MODULES:
        importlib.import_module(CONFIG_MODULES[name])                   # registers the class
    cls = CONFIG_CLASSES.get(name)
    if cls is None:
        raise ValueError(f"checkpoint config_class {name!r} is not one of {sorted(CONFIG_CLASSES)}")
    cfg = cls(**meta["config"])
    check_params(params, cfg)
    return params, cfg, meta["extra"], arrays
