"""Command line: ``python -m mamba_from_scratch <command> [options]``.

Each command lives in its own module with a ``main(argv)`` that builds its own argparse
parser; this file only maps names to modules, imported lazily so ``--help`` is instant
and no command pays for another's imports.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "demo": ("mamba_from_scratch.demo", "train a small Mamba on in-context regression and plot its loss"),
    "bench": ("mamba_from_scratch.bench.cli", "time the selective scan backends and a training step"),
    "icl-theory": ("mamba_from_scratch.icl.theory", "paper 1's one-layer gated Mamba vs linear attention and KRR"),
    "icl-train": ("mamba_from_scratch.icl.train", "train a Mamba or linear-attention Transformer on in-context prompts"),
    "icl-eval": ("mamba_from_scratch.icl.evaluate_trained", "in-context error vs N of trained checkpoints vs KRR"),
    "outliers": ("mamba_from_scratch.icl.outliers.experiment", "paper 3: in-context classification with outliers"),
    "generate": ("mamba_from_scratch.lm.cli", "generate text from a pretrained Mamba folder (transformers layout)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m mamba_from_scratch <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `python -m mamba_from_scratch <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest) or 0
