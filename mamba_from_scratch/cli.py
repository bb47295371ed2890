"""Command line: ``python -m mamba_from_scratch [--debug] <command> [options]``.

Each command lives in its own module with a ``main(argv)`` that builds its own argparse
parser; this file only maps names to modules, imported lazily so ``--help`` is instant
and no command pays for another's imports.

Errors: a ``ValueError`` (bad input or options, a bad checkpoint, an unusable --out) is
printed as one line, ``error: <message>``, with exit status 2, like argparse's own usage
errors. ``--debug`` anywhere on the command line, or ``MAMBA_DEBUG=1`` in the environment,
shows the traceback instead. Ctrl-C ends a command with exit status 130 and no traceback
(``icl-train`` first says which step it reached and how to resume).
"""
from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    "demo": ("mamba_from_scratch.demo", "train a small Mamba on in-context regression and plot its loss"),
    "bench": ("mamba_from_scratch.bench.cli", "time the selective scan backends and a training step"),
    "icl-theory": ("mamba_from_scratch.icl.theory", "paper 1's one-layer gated Mamba vs linear attention and KRR"),
    "icl-train": ("mamba_from_scratch.icl.train",
                  "train a Mamba or linear-attention Transformer on in-context prompts"),
    "icl-eval": ("mamba_from_scratch.icl.evaluate_trained", "in-context error vs N of trained checkpoints vs KRR"),
    "outliers": ("mamba_from_scratch.icl.outliers.experiment", "paper 3: in-context classification with outliers"),
    "generate": ("mamba_from_scratch.lm.cli", "generate text from a pretrained Mamba folder (transformers layout)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m mamba_from_scratch [--debug] <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `python -m mamba_from_scratch <command> --help` for a command's options.",
              "An error in the input prints one line `error: ...` (exit 2); --debug or MAMBA_DEBUG=1 shows "
              "the traceback."]
    return "\n".join(lines)


def debug_mode(argv) -> bool:
    """True when tracebacks were asked for: ``--debug`` in argv or MAMBA_DEBUG set (not 0)."""
    return "--debug" in argv or os.environ.get("MAMBA_DEBUG", "0") not in ("", "0")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = debug_mode(argv)
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return module.main(rest) or 0
    except ValueError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
