"""Every bad input is a ValueError that names the argument (issue 12).

One table per layer of the package: the scan, the layers, the model, the optimizer, the
checkpoints, and the command line. Each case is a call that must raise ``ValueError`` and a
regular expression the message must match: the argument's name and what was wrong. The
command-line cases also check the manners: one line ``error: <message>`` on stderr, exit
status 2, no traceback, and nothing computed.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from mamba_from_scratch import cli
from mamba_from_scratch.checkpoint import load_checkpoint, save_checkpoint
from mamba_from_scratch.icl import train
from mamba_from_scratch.layers import (
    conv1d_backward,
    conv1d_forward,
    linear_backward,
    linear_forward,
    rmsnorm_backward,
    rmsnorm_forward,
    silu_forward,
    softplus_backward,
    softplus_forward,
)
from mamba_from_scratch.models import linear_attention as lat
from mamba_from_scratch.models.mamba import (
    MambaConfig,
    init_params,
    init_state,
    model_backward,
    model_forward,
    model_step,
)
from mamba_from_scratch.optim import AdamW, clip_grad_norm, cosine_lr
from mamba_from_scratch.scan import gpu_available, selective_scan_backward, selective_scan_forward

RNG = np.random.default_rng(0)
no_gpu = pytest.mark.skipif(gpu_available(), reason="a real GPU is present")


# ---------------------------------------------------------------- building blocks

def scan_args(**change):
    """Good scan inputs (b=2, l=5, d_inner=3, n=4, float64) with some replaced."""
    args = dict(u=RNG.normal(size=(2, 5, 3)), delta=np.full((2, 5, 3), 0.1), A=-np.ones((3, 4)),
                B=RNG.normal(size=(2, 5, 4)), C=RNG.normal(size=(2, 5, 4)), D=np.ones(3), h0=None)
    args.update(change)
    return args


def scan_cache():
    return selective_scan_forward(**scan_args(), backend="numpy")[2]


CFG = MambaConfig(d_model=4, n_layer=1, d_state=3, d_in=2, d_out=1)
PARAMS = init_params(CFG, np.random.default_rng(1), np.float64)
X = RNG.normal(size=(2, 3, 2))


def params_with(key, value=None, drop=False):
    """A copy of PARAMS with one entry replaced (or removed)."""
    p = {k: v.copy() for k, v in PARAMS.items()}
    if drop:
        del p[key]
    else:
        p[key] = value
    return p


def nan_like(a):
    b = a.copy()
    b.flat[0] = np.nan
    return b


def model_cache():
    return model_forward(PARAMS, CFG, X, "numpy")[1]


TF_CFG = lat.LinearTFConfig(d_model=4, n_layer=1, n_head=2, d_mlp=5, d_in=2, d_out=1)
TF_PARAMS = lat.init_params(TF_CFG, np.random.default_rng(2), np.float64)


def optimizer():
    return AdamW({"w": np.zeros((2, 3))}, lr=0.1)


# ---------------------------------------------------------------- the API table

API_CASES = [
    # the selective scan
    ("scan delta < 0", lambda: selective_scan_forward(**scan_args(delta=-np.ones((2, 5, 3)))), r"delta must be >= 0"),
    ("scan A > 0", lambda: selective_scan_forward(**scan_args(A=np.ones((3, 4)))), r"A must be <= 0"),
    ("scan integer u", lambda: selective_scan_forward(**scan_args(u=np.ones((2, 5, 3), int))), r"^u must have dtype"),
    ("scan B shape", lambda: selective_scan_forward(**scan_args(B=np.ones((2, 5, 2)))), r"^B must have shape"),
    ("scan NaN h0", lambda: selective_scan_forward(**scan_args(h0=np.full((2, 3, 4), np.nan))), r"^h0 contains NaN"),
    ("scan D length", lambda: selective_scan_forward(**scan_args(D=np.ones(4))), r"^D must have shape"),
    ("scan unknown backend", lambda: selective_scan_forward(**scan_args(), backend="torch"),
     r"^backend must be one of"),
    ("scan cuda without GPU", lambda: selective_scan_forward(**scan_args(), backend="cuda"),
     r"backend='cuda': no CUDA GPU found; use backend='numba'", no_gpu),
    ("scan dy shape", lambda: selective_scan_backward(np.ones((2, 5, 4)), scan_cache()), r"^dy must have shape"),
    ("scan cache", lambda: selective_scan_backward(np.ones((2, 5, 3)), (1, 2)), r"^cache must be the ScanCache"),
    # the layers
    ("linear integer x", lambda: linear_forward(np.ones((2, 3), int), np.ones((4, 3))), r"^x must have dtype float"),
    ("linear in mismatch", lambda: linear_forward(np.ones((2, 3)), np.ones((4, 5))),
     r"^x must have shape \(\.\.\., in=5\)"),
    ("linear weight dtype", lambda: linear_forward(np.ones((2, 3)), np.ones((4, 3), np.float32)),
     r"^weight must have dtype float64"),
    ("linear bias shape", lambda: linear_forward(np.ones((2, 3)), np.ones((4, 3)), np.ones(3)),
     r"^bias must have shape \(4\)"),
    ("linear dout shape", lambda: linear_backward(np.ones((2, 5)), linear_forward(np.ones((2, 3)), np.ones((4, 3)))[1]),
     r"^dout must have shape \(2, 4\)"),
    ("rmsnorm weight shape", lambda: rmsnorm_forward(np.ones((2, 3)), np.ones(4)), r"^weight must have shape \(3\)"),
    ("rmsnorm eps", lambda: rmsnorm_forward(np.ones((2, 3)), np.ones(3), eps=0.0), r"^eps must be a finite number > 0"),
    ("rmsnorm dout dtype",
     lambda: rmsnorm_backward(np.ones((2, 3), np.float32), rmsnorm_forward(np.ones((2, 3)), np.ones(3))[1]),
     r"^dout must have dtype float64"),
    ("conv1d weight shape", lambda: conv1d_forward(np.ones((2, 5, 3)), np.ones((3, 4)), np.ones(3)),
     r"^weight must have 3 dimensions"),
    ("conv1d conv_state",
     lambda: conv1d_forward(np.ones((2, 5, 3)), np.ones((3, 1, 4)), np.ones(3), np.ones((2, 2, 3))),
     r"^conv_state must have shape \(2, 3, 3\)"),
    ("conv1d dout shape",
     lambda: conv1d_backward(np.ones((2, 4, 3)), conv1d_forward(np.ones((2, 5, 3)), np.ones((3, 1, 4)), np.ones(3))[1]),
     r"^dout must have shape \(2, 5, 3\)"),
    ("silu list input", lambda: silu_forward([1.0, 2.0]), r"^x must be a numpy\.ndarray"),
    ("softplus dout shape", lambda: softplus_backward(np.ones(3), softplus_forward(np.ones(2))[1]),
     r"^dout must have shape \(2\)"),
    # the model
    ("config dt_init_floor", lambda: MambaConfig(d_model=4, n_layer=1, d_in=1, d_out=1, dt_init_floor=10),
     r"^dt_init_floor must be <= dt_max"),
    ("init_params int dtype", lambda: init_params(CFG, np.random.default_rng(0), np.int32),
     r"^dtype must be float32 or float64"),
    ("init_params cfg", lambda: init_params({"d_model": 4}, np.random.default_rng(0)), r"^cfg must be a MambaConfig"),
    ("forward missing key", lambda: model_forward(params_with("layers.0.mixer.A_log", drop=True), CFG, X, "numpy"),
     r"^params keys do not match the config: missing \['layers\.0\.mixer\.A_log'\]"),
    ("forward wrong shape",
     lambda: model_forward(params_with("layers.0.mixer.in_proj.weight", np.ones((16, 5))), CFG, X, "numpy"),
     r"^params\['layers\.0\.mixer\.in_proj\.weight'\] must have shape \(16, 4\)"),
    ("forward NaN norm_f",
     lambda: model_forward(params_with("norm_f.weight", nan_like(PARAMS["norm_f.weight"])), CFG, X, "numpy"),
     r"^params\['norm_f\.weight'\] contains NaN"),
    ("forward NaN in_proj",
     lambda: model_forward(params_with("layers.0.mixer.in_proj.weight",
                                       nan_like(PARAMS["layers.0.mixer.in_proj.weight"])), CFG, X, "numba"),
     r"^params\['layers\.0\.mixer\.in_proj\.weight'\] contains NaN"),
    ("forward mixed dtypes",
     lambda: model_forward(params_with("norm_f.weight", np.ones(4, np.float32)), CFG, X, "numpy"),
     r"^params\['norm_f\.weight'\] must have dtype float64"),
    ("forward params list", lambda: model_forward(list(PARAMS.values()), CFG, X, "numpy"), r"^params must be a dict"),
    ("forward cfg", lambda: model_forward(PARAMS, TF_CFG, X, "numpy"), r"^cfg must be a MambaConfig"),
    ("step state batch", lambda: model_step(PARAMS, CFG, X[:, 0], init_state(CFG, 3, np.float64)),
     r"^state\[0\]\['conv'\] must have shape \(2, 3, 8\)"),
    ("step NaN state",
     lambda: model_step(PARAMS, CFG, X[:, 0], [{"conv": np.zeros((2, 3, 8)), "h": np.full((2, 8, 3), np.nan)}]),
     r"^state\[0\]\['h'\] contains NaN"),
    ("step state None", lambda: model_step(PARAMS, CFG, X[:, 0], None), r"^state must be a list of 1 per-layer dicts"),
    ("step x_t shape", lambda: model_step(PARAMS, CFG, X[:, 0, :1], init_state(CFG, 2, np.float64)),
     r"^x_t must have shape"),
    ("init_state dtype", lambda: init_state(CFG, 2, np.int64), r"^dtype must be float32 or float64"),
    ("backward dout shape", lambda: model_backward(np.ones((2, 3, 2)), model_cache()),
     r"^dout must have shape \(2, 3, 1\)"),
    ("backward dout dtype", lambda: model_backward(np.ones((2, 3, 1), np.float32), model_cache()),
     r"^dout must have dtype float64"),
    ("backward NaN dout", lambda: model_backward(np.full((2, 3, 1), np.nan), model_cache()), r"^dout contains NaN"),
    ("backward cache", lambda: model_backward(np.ones((2, 3, 1)), ("not", "a", "cache")),
     r"^cache must be the cache returned by model_forward"),
    ("linear-tf NaN param", lambda: lat.model_forward({**TF_PARAMS, "norm_f.weight": np.full(4, np.nan)}, TF_CFG, X),
     r"^params\['norm_f\.weight'\] contains NaN"),
    ("linear-tf dout shape", lambda: lat.model_backward(np.ones((2, 4, 1)), lat.model_forward(TF_PARAMS, TF_CFG, X)[1]),
     r"^dout must have shape \(2, 3, 1\)"),
    ("linear-tf int dtype", lambda: lat.init_params(TF_CFG, np.random.default_rng(0), np.int32),
     r"^dtype must be float32 or float64"),
    # the optimizer and the schedule
    ("AdamW betas scalar", lambda: AdamW({"w": np.zeros(2)}, betas=0.9), r"^betas must be a pair"),
    ("AdamW beta2 = 1", lambda: AdamW({"w": np.zeros(2)}, betas=(0.9, 1.0)),
     r"^betas\[1\] must be a finite number in \[0, 1\)"),
    ("AdamW params list", lambda: AdamW([np.zeros(2)]), r"^params must be a dict"),
    ("AdamW lr", lambda: AdamW({"w": np.zeros(2)}, lr=-1.0), r"^lr must be a finite number > 0"),
    ("AdamW grad shape", lambda: optimizer().step({"w": np.zeros((2, 3))}, {"w": np.ones(3)}),
     r"^grads\['w'\] must have shape \(2, 3\)"),
    ("AdamW NaN grad", lambda: optimizer().step({"w": np.zeros((2, 3))}, {"w": np.full((2, 3), np.nan)}),
     r"^grads\['w'\] contains NaN"),
    ("AdamW grad keys", lambda: optimizer().step({"w": np.zeros((2, 3))}, {"v": np.ones((2, 3))}),
     r"^grads must be a dict with the optimizer's keys"),
    ("AdamW state lacks v", lambda: optimizer().load_state_dict({"m.w": np.zeros((2, 3)), "t": np.array(1)}),
     r"lacks the moment v\.w"),
    ("cosine_lr warmup", lambda: cosine_lr(0, 100, 1e-3, warmup=-5), r"^warmup must be an integer >= 0"),
    ("cosine_lr lr_max", lambda: cosine_lr(0, 100, -1e-3), r"^lr_max must be a finite number in \[0, inf\)"),
    ("cosine_lr step", lambda: cosine_lr(-1, 100, 1e-3), r"^step must be an integer >= 0"),
    ("cosine_lr lr_min", lambda: cosine_lr(0, 100, 1e-3, lr_min=1.0),
     r"^lr_min must be a finite number in \[0, 0\.001\]"),
    ("clip max_norm", lambda: clip_grad_norm({"w": np.ones(2)}, 0.0), r"^max_norm must be a finite number > 0"),
    # configs of the training command
    ("TrainConfig n_val", lambda: train.TrainConfig(n_val=1), r"^n_val must be an integer >= 2"),
    ("TrainConfig lr_min_frac", lambda: train.TrainConfig(lr_min_frac=2.0),
     r"^lr_min_frac must be a finite number in \(0, 1\]"),
    ("TrainConfig backend", lambda: train.TrainConfig(backend="gpu"), r"^backend must be one of"),
]


def cases(table):
    """pytest params from (id, call or argv, pattern[, mark]) rows."""
    return [pytest.param(row[1], row[2], id=row[0], marks=row[3:]) for row in table]


@pytest.mark.parametrize("call, pattern", cases(API_CASES))
def test_api_bad_input(call, pattern):
    with pytest.raises(ValueError) as info:
        call()
    assert re.search(pattern, str(info.value)), str(info.value)


def test_the_tables_are_big_enough():
    assert len(API_CASES) + len(CHECKPOINT_CASES) + len(CLI_CASES) >= 40


# ---------------------------------------------------------------- checkpoints

def _write_good(path):
    save_checkpoint(path, PARAMS, CFG, extra={"note": 1})


def _with_meta(path, meta, **arrays):
    _write_good(path)
    with np.load(path) as f:
        entries = {k: f[k] for k in f.files}
    entries.update(arrays)
    if meta is not None:
        entries["meta"] = np.array(meta if isinstance(meta, str) else json.dumps(meta))
    np.savez(path, **entries)


def _meta(**change):
    meta = {"config_class": "MambaConfig", "config": CFG.to_dict(), "extra": {}}
    meta.update(change)
    return {k: v for k, v in meta.items() if v is not None}


def _truncated(path):
    _write_good(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _npy_renamed(path):
    np.save(path.with_suffix(".npy"), np.zeros(3))
    os.replace(path.with_suffix(".npy"), path)


CHECKPOINT_CASES = [
    ("missing file", lambda p: None, r"no such file"),
    ("a folder", lambda p: p.mkdir(), r"is a folder"),
    ("truncated", _truncated, r"cannot be read \(truncated"),
    ("empty file", lambda p: p.write_bytes(b""), r"cannot be read"),
    ("text file", lambda p: p.write_text("hello\n"), r"is not a NumPy \.npz archive"),
    ("renamed .npy", _npy_renamed, r"is a single \.npy array"),
    ("no meta", lambda p: np.savez(p, a=np.zeros(2)), r"has no 'meta' entry"),
    ("meta not JSON", lambda p: _with_meta(p, "{not json"), r"'meta' entry is not valid JSON"),
    ("meta a list", lambda p: _with_meta(p, [1, 2]), r"'meta' entry must be a JSON object"),
    ("no extra", lambda p: _with_meta(p, _meta(extra=None)), r"meta has no dict 'extra'"),
    ("unknown class", lambda p: _with_meta(p, _meta(config_class="GPT")), r"config_class 'GPT' is not one of"),
    ("unknown config key", lambda p: _with_meta(p, _meta(config={**CFG.to_dict(), "zzz": 1})),
     r"unexpected keyword argument 'zzz'"),
    ("invalid config", lambda p: _with_meta(p, _meta(config={**CFG.to_dict(), "d_model": 0})),
     r"config is invalid: d_model must be"),
    ("other model size", lambda p: _with_meta(p, _meta(config={**CFG.to_dict(), "d_model": 8})),
     r"params\['read_in\.weight'\] must have shape \(8, 2\)"),
    ("NaN parameter", lambda p: _with_meta(p, None, **{"params/norm_f.weight": np.full(4, np.nan)}),
     r"params\['norm_f\.weight'\] contains NaN"),
]


@pytest.mark.parametrize("make, problem", cases(CHECKPOINT_CASES))
def test_bad_checkpoint_file(tmp_path, make, problem):
    path = tmp_path / "ckpt.npz"
    make(path)
    with pytest.raises(ValueError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"checkpoint {str(path)!r}: "), message
    assert re.search(problem, message), message


def test_save_checkpoint_rejects_bad_params(tmp_path):
    with pytest.raises(ValueError, match=r"^params\['norm_f\.weight'\] contains NaN"):
        save_checkpoint(tmp_path / "c.npz", params_with("norm_f.weight", np.full(4, np.nan)), CFG)
    with pytest.raises(ValueError, match=r"^cfg must be a model config"):
        save_checkpoint(tmp_path / "c.npz", PARAMS, {"d_model": 4})
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- the command line

TINY = ["--d", "4", "--r", "2", "--N", "6", "--batch", "2", "--steps", "2", "--d-model", "8", "--n-layer", "1",
        "--d-state", "4", "--n-val", "4", "--backend", "numpy", "--no-progress"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with a file, a read-only folder and a tiny trained checkpoint (N = 6)."""
    root = tmp_path_factory.mktemp("cli")
    (root / "a_file").write_text("not a folder\n")
    (root / "read_only").mkdir()
    os.chmod(root / "read_only", 0o555)
    assert train.main(["--out", str(root / "run"), *TINY]) == 0
    (root / "broken.npz").write_bytes((root / "run" / "ckpt.npz").read_bytes()[:200])
    yield root
    os.chmod(root / "read_only", 0o755)


root_can_write_anywhere = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                                             reason="root writes into read-only folders")

CLI_CASES = [
    ("icl-train --n-val 1", ["icl-train", "--out", "{w}/x", "--n-val", "1"], r"n_val must be an integer >= 2"),
    ("icl-train --out a file", ["icl-train", "--out", "{w}/a_file", *TINY], r"--out '.*a_file' is a file"),
    ("icl-train --out under a file", ["icl-train", "--out", "{w}/a_file/sub", *TINY],
     r"--out '.*a_file/sub' is not a writable folder"),
    ("icl-train --out read-only", ["icl-train", "--out", "{w}/read_only/sub", *TINY],
     r"--out '.*read_only/sub' is not a writable folder", root_can_write_anywhere),
    ("icl-train --backend cuda", ["icl-train", "--out", "{w}/x", "--backend", "cuda"],
     r"backend='cuda': no CUDA GPU found; use backend='numba'", no_gpu),
    ("icl-train --resume nothing", ["icl-train", "--out", "{w}/empty", "--resume", *TINY],
     r"resume: there is no checkpoint"),
    ("icl-train --resume other config", ["icl-train", "--out", "{w}/run", "--resume", *TINY, "--lr", "0.5"],
     r"resume: the checkpoint .* different configuration"),
    ("icl-train --lr-min-frac", ["icl-train", "--out", "{w}/x", "--lr-min-frac", "2"], r"lr_min_frac must be"),
    ("icl-train --until 0", ["icl-train", "--out", "{w}/x", "--until", "0", *TINY], r"until must be an integer >= 1"),
    ("icl-train --link", ["icl-train", "--out", "{w}/x", "--link", "he9x"], r"link"),
    ("demo --out a file", ["demo", "--out", "{w}/a_file", "--steps", "1"], r"--out '.*a_file' is a file"),
    ("demo --examples < d", ["demo", "--out", "{w}/demo", "--examples", "2", "--d", "4"],
     r"--examples must be >= --d \(4\)"),
    ("demo --steps 0", ["demo", "--out", "{w}/demo", "--steps", "0"], r"--steps must be an integer >= 1"),
    ("demo --backend", ["demo", "--out", "{w}/demo", "--backend", "gpu"], r"--backend must be one of"),
    ("icl-eval broken checkpoint", ["icl-eval", "--checkpoint", "{w}/broken.npz", "--out", "{w}/ev"],
     r"checkpoint '.*broken\.npz': cannot be read"),
    ("icl-eval --N beyond trained", ["icl-eval", "--checkpoint", "{w}/run/ckpt.npz", "--N", "100", "--out", "{w}/ev"],
     r"--N: every requested context length \(100\) exceeds the N the models were trained with: .* \(N = 6\)"),
    ("icl-eval --n-prompts 1", ["icl-eval", "--checkpoint", "{w}/run/ckpt.npz", "--n-prompts", "1", "--out", "{w}/ev"],
     r"--n-prompts must be an integer >= 2"),
    ("outliers --quick --steps -1", ["outliers", "--quick", "--steps", "-1", "--out", "{w}/o"],
     r"--steps must be an integer >= 1"),
    ("outliers --quick --seeds 0", ["outliers", "--quick", "--seeds", "0", "--out", "{w}/o"],
     r"--seeds must be an integer >= 1"),
    ("outliers --quick --n-test 0", ["outliers", "--quick", "--n-test", "0", "--out", "{w}/o"],
     r"--n-test must be an integer >= 1"),
    ("outliers --out a file", ["outliers", "--quick", "--out", "{w}/a_file"], r"--out '.*a_file' is a file"),
]


@pytest.mark.parametrize("argv, pattern", cases(CLI_CASES))
def test_cli_bad_input_is_one_line_and_exit_2(workdir, capsys, monkeypatch, argv, pattern):
    monkeypatch.delenv("MAMBA_DEBUG", raising=False)
    before = sorted(p.name for p in workdir.rglob("*"))
    rc = cli.main([a.replace("{w}", str(workdir)) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in out + err
    # nothing was computed or written (a checked --out may have been created, empty)
    written = [p for p in workdir.rglob("*") if p.name not in before and not p.is_dir()]
    assert not written, written


def test_read_only_out_is_refused_before_training(tmp_path, capsys, monkeypatch):
    """A folder that cannot be written (simulated: root can write into a 0o555 folder) fails
    the probe of check_output_dir, before the first step and not at the first checkpoint."""
    import mamba_from_scratch.validate as validate

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(validate.tempfile, "mkstemp", refuse)
    monkeypatch.setattr(train, "sample_batch", lambda *a: pytest.fail("training started"))
    assert cli.main(["icl-train", "--out", str(tmp_path / "out"), *TINY]) == 2
    want = f"error: --out {str(tmp_path / 'out')!r} is not a writable folder (Permission denied)\n"
    assert capsys.readouterr().err == want


def test_cli_debug_shows_the_traceback(workdir, monkeypatch):
    argv = ["icl-train", "--out", str(workdir / "x"), "--n-val", "1"]
    with pytest.raises(ValueError, match="n_val"):
        cli.main(["--debug", *argv])
    monkeypatch.setenv("MAMBA_DEBUG", "1")
    with pytest.raises(ValueError, match="n_val"):
        cli.main(argv)


def test_cli_error_in_a_real_process(tmp_path):
    """The installed entry point: exit status 2, one line on stderr, no traceback."""
    env = {k: v for k, v in os.environ.items() if k != "MAMBA_DEBUG"}
    r = subprocess.run([sys.executable, "-m", "mamba_from_scratch", "demo", "--examples", "2", "--out", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: --examples must be >= --d (4): the report reads the error at example d, where d examples "
        "determine w; got 2"]
