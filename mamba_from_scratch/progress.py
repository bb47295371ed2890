"""Progress reporting that does not flood logs.

``tqdm`` redraws its bar on every ``set_postfix`` call: a training loop that sets the loss
each step wrote one line per step into ``make demo``'s log (thousands of lines). On a
terminal that redraw is harmless; in a file or a pipe every redraw is kept.

:class:`Progress` is a tqdm bar on a terminal, redrawn at most every ``mininterval`` seconds
(postfix changes wait for the next redraw), and, when the output is not a terminal, one
plain line every ``every`` steps (about 20 lines per run by default) and one at the end.
"""
from __future__ import annotations

import math
import sys

from tqdm import tqdm


class Progress:
    """A progress bar for a loop of ``total`` steps (see the module docstring).

    Args:
        total: steps in the run.  desc: label.  initial: steps already done (a resumed run).
        enabled: False prints nothing.  file: output stream (default sys.stderr).
        every: steps between plain lines when ``file`` is not a terminal (default: total / 20).
        mininterval: seconds between redraws of the terminal bar.  leave: keep the terminal
        bar after :meth:`close`.
    """

    def __init__(self, total, desc, initial=0, enabled=True, file=None, every=None, mininterval=0.5, leave=True):
        self.file = sys.stderr if file is None else file
        self.total, self.desc, self.n = total, desc, initial
        self.enabled = enabled
        isatty = getattr(self.file, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.every = every if every is not None else max(1, math.ceil(total / 20))
        self.postfix = {}
        self._last_line = initial
        self.bar = None
        if enabled and self.tty:
            self.bar = tqdm(total=total, initial=initial, desc=desc, file=self.file, mininterval=mininterval,
                            dynamic_ncols=True, leave=leave)

    def set_postfix(self, **values):
        """Values shown after the count; they appear at the next redraw or plain line."""
        self.postfix = {k: str(v) for k, v in values.items()}
        if self.bar is not None:
            self.bar.set_postfix(self.postfix, refresh=False)

    def update(self, n=1):
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and not self.tty and self.n - self._last_line >= self.every:
            self._line()

    def write(self, msg, file=None):
        """A message on its own line, to stdout by default (above the bar on a terminal), as
        ``tqdm.write``: printed even when the bar is disabled."""
        tqdm.write(msg, file=file)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and not self.tty and self.n != self._last_line:
            self._line()

    def _line(self):
        post = "".join(f", {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {self.n}/{self.total}{post}", file=self.file, flush=True)
        self._last_line = self.n
