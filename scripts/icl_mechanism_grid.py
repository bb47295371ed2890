"""The issue-14 grid (docs/results_icl_mechanism.md), resumable: train, freeze, evaluate.

    nohup .venv/bin/python scripts/icl_mechanism_grid.py --jobs 2 >> runs/icl_mechanism/driver.log 2>&1 &
    .venv/bin/python scripts/icl_mechanism_grid.py --status        # what is done, partial, missing

Every run is ``icl-train --full --N 64`` with one (model, link, d, seed), trained in
runs/icl_mechanism/<name>/ on one thread (NUMBA_NUM_THREADS=1, OMP_WAIT_POLICY=PASSIVE), where
<name> = icl_{model}_{link}_d{d}_N{N}_s{seed}. For each run, in the grid's priority order
(every He3 run before any He2 run, as the issue keeps 3 seeds for He3 first; within a link
seed 0 before 1 before 2, then d, then model: the ablations and the Mamba before the
Transformers), the driver does the first of these that is still missing:
  1. train: start it, or ``--resume`` it from its last checkpoint (bit-identical);
  2. final checkpoint: docs/checkpoints/<name>.npz, the parameters, config and logs without
     the optimizer state (about a third of the size);
  3. evaluation: ``icl-eval`` of that file (with ``--freeze-selection`` for the Mambas) at
     N in {1, 2, 4, 8, 16, 24, 32, 48, 64} into docs/figures/icl_mechanism/runs/<name>/.
A finished run (final checkpoint and evaluation present) is skipped, so the driver can be
killed at any time and started again. A run that another driver is working on (a live pid in
its lock file) is skipped too. A diverged run is reported and left alone. Nothing is committed:
commit each final checkpoint and its evaluation as it lands.

Tests: tests/test_icl_mechanism_grid.py (a tiny grid through all three stages).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from mamba_from_scratch.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402

MODELS = ("mamba-nonselective", "mamba", "softmax-tf", "mamba-nogate", "linear-tf")
LINKS = ("he3", "he2")          # He3 first: the issue keeps 3 seeds for every He3 configuration first
DS = (16, 32)
SEEDS = (0, 1, 2)
EVAL_N = "1,2,4,8,16,24,32,48,64"


def run_name(model, link, d, N, seed):
    return f"icl_{model}_{link}_d{d}_N{N}_s{seed}"


def grid(args):
    """(model, link, d, seed) in priority order, filtered by the options."""
    keep = lambda values, opt: [v for v in values if opt is None or str(v) in opt.split(",")]
    return [(m, link, d, s) for link, s, d, m in itertools.product(keep(LINKS, args.links), keep(SEEDS, args.seeds),
                                                                    keep(DS, args.ds), keep(MODELS, args.models))]


def paths(args, model, link, d, seed):
    name = run_name(model, link, d, args.N, seed)
    return (name, os.path.join(args.runs_dir, name), os.path.join(args.checkpoint_dir, name + ".npz"),
            os.path.join(args.eval_dir, name))


def summary(run_dir):
    try:
        with open(os.path.join(run_dir, "train_summary.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def state(args, model, link, d, seed):
    """'evaluated', 'final' (checkpoint written, not evaluated), 'trained', 'diverged',
    'partial (step k)' or 'missing'."""
    _, run_dir, final, ev = paths(args, model, link, d, seed)
    if os.path.exists(final):
        return "evaluated" if os.path.exists(os.path.join(ev, "metrics.csv")) else "final"
    s = summary(run_dir)
    if s is not None and s["status"] == "done":
        return "trained"
    if s is not None and s["status"] == "diverged":
        return "diverged"
    ckpt = os.path.join(run_dir, "ckpt.npz")
    if os.path.exists(ckpt):
        return f"partial (step {s['step'] if s else '?'})"
    return "missing"


def locked(run_dir):
    """True if another live driver holds run_dir's lock; else take it."""
    lock = os.path.join(run_dir, "driver.lock")
    os.makedirs(run_dir, exist_ok=True)
    try:
        with open(lock) as f:
            pid = int(f.read().strip())
        if pid != os.getpid():
            os.kill(pid, 0)               # raises if no such process
            return True
    except (OSError, ValueError):
        pass
    with open(lock, "w") as f:
        f.write(str(os.getpid()))
    return False


def env():
    e = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1",
             OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg")
    e["PYTHONPATH"] = REPO + os.pathsep + e.get("PYTHONPATH", "")
    return e


def log(msg):
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}", flush=True)


def do_run(args, model, link, d, seed):
    """Train (or resume), write the final checkpoint, evaluate: whatever is still missing."""
    name, run_dir, final, ev = paths(args, model, link, d, seed)
    st = state(args, model, link, d, seed)
    if st == "evaluated":
        return name, st
    if st == "diverged":
        log(f"{name}: diverged earlier ({summary(run_dir)['message']}); left alone")
        return name, st
    if locked(run_dir):
        log(f"{name}: another driver is on it; skipped")
        return name, "locked"
    try:
        py = [sys.executable, "-m", "mamba_from_scratch"]
        if st.startswith("partial") or st == "missing":
            cmd = py + ["icl-train", "--full", "--N", str(args.N), "--model", model, "--link", link, "--d", str(d),
                        "--seed", str(seed), "--out", run_dir, "--no-progress"] + args.train_args.split()
            if st.startswith("partial"):
                cmd.append("--resume")
            log(f"{name}: {st} -> {' '.join(cmd[2:])}")
            t0 = time.time()
            with open(os.path.join(run_dir, "train.log"), "a") as out:
                rc = subprocess.run(cmd, cwd=REPO, env=env(), stdout=out, stderr=subprocess.STDOUT).returncode
            log(f"{name}: icl-train exit {rc} after {(time.time() - t0) / 60:.1f} min wall "
                f"(load {os.getloadavg()[0]:.1f})")
            if rc != 0:
                return name, state(args, model, link, d, seed)
        if not os.path.exists(final):
            params, cfg, extra, _ = load_checkpoint(os.path.join(run_dir, "ckpt.npz"))
            tc = extra["train_config"]
            if extra["step"] != tc["steps"]:
                raise RuntimeError(f"{name}: checkpoint at step {extra['step']} of {tc['steps']}")
            save_checkpoint(final, params, cfg, extra=extra)          # no optimizer moments
            log(f"{name}: wrote {final} ({os.path.getsize(final) / 1e6:.2f} MB)")
        cmd = py + ["icl-eval", "--checkpoint", final, "--labels", model, "--N", args.eval_N, "--n-prompts",
                    str(args.n_prompts), "--out", ev, "--no-progress"]
        if model.startswith("mamba"):
            cmd.append("--freeze-selection")
        t0 = time.time()
        with open(os.path.join(run_dir, "eval.log"), "a") as out:
            rc = subprocess.run(cmd, cwd=REPO, env=env(), stdout=out, stderr=subprocess.STDOUT).returncode
        log(f"{name}: icl-eval exit {rc} after {(time.time() - t0) / 60:.1f} min -> {ev}")
        return name, state(args, model, link, d, seed)
    finally:
        try:
            os.unlink(os.path.join(run_dir, "driver.lock"))
        except OSError:
            pass


def status_table(args):
    lines = ["| run | state |", "|---|---|"]
    lines += [f"| `{run_name(m, link, d, args.N, s)}` | {state(args, m, link, d, s)} |" for m, link, d, s in grid(args)]
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, one thread each (default 1)")
    p.add_argument("--max-runs", type=int, default=None, help="stop after attempting this many runs")
    p.add_argument("--models", default=None, help=f"comma-separated subset of {','.join(MODELS)}")
    p.add_argument("--links", default=None)
    p.add_argument("--ds", default=None)
    p.add_argument("--seeds", default=None)
    p.add_argument("--N", type=int, default=64)
    p.add_argument("--eval-N", default=EVAL_N)
    p.add_argument("--n-prompts", type=int, default=1024)
    p.add_argument("--train-args", default="", help="extra icl-train options (tests shrink the run with them)")
    p.add_argument("--runs-dir", default=os.path.join(REPO, "runs", "icl_mechanism"))
    p.add_argument("--checkpoint-dir", default=os.path.join(REPO, "docs", "checkpoints"))
    p.add_argument("--eval-dir", default=os.path.join(REPO, "docs", "figures", "icl_mechanism", "runs"))
    p.add_argument("--status", action="store_true", help="print every run's state as a markdown table and exit")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.status:
        print(status_table(args))
        return 0
    todo = [r for r in grid(args) if state(args, *r) != "evaluated"]
    if args.max_runs is not None:
        todo = todo[:args.max_runs]
    log(f"{len(todo)} runs to do, {args.jobs} at a time (load {os.getloadavg()[0]:.1f})")
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda r: do_run(args, *r), todo))
    for name, st in results:
        log(f"{name}: {st}")
    return 0 if all(st == "evaluated" for _, st in results) else 1


if __name__ == "__main__":
    sys.exit(main())
