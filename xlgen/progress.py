"""Progress bars that are bars on a terminal and a few plain lines in a log.

tqdm redraws its bar in place with carriage returns, which a terminal shows as one moving line and a
log file keeps as thousands of updates on one 'line' (``bash scripts/main.sh > log`` held several hundred
KB of ``embedding: x%``). :func:`progress_bar` gives tqdm's bar where the output is a terminal and,
elsewhere (a pipe, a file, CI), a :class:`LineProgress` that writes one plain line at the start, each
time another tenth of the work is done, and at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import IO, Any

from tqdm.std import tqdm

LINE_STEP = 0.1
"""A line is written each time this share of the total is crossed."""
LINE_INTERVAL_S = 30.0
"""Without a known total, a line at most this often."""


class LineProgress(tqdm):
    """A tqdm that writes whole lines and never a carriage return.

    Args:
        *args: As for tqdm.
        step: The share of the total between two lines.
        interval_s: Seconds between two lines when the total is unknown.
        **kwargs: As for tqdm.
    """

    def __init__(self, *args: Any, step: float = LINE_STEP, interval_s: float = LINE_INTERVAL_S, **kwargs: Any) -> None:
        if not 0 < step <= 1:
            raise ValueError(f"step must lie in (0, 1], got {step}")
        self._step, self._interval_s = step, interval_s
        self._last_step, self._last_line_t, self._last_line_n = -1, float("-inf"), -1
        # every update reaches display(), which decides whether a line is due (a comparison: cheap)
        kwargs.update(miniters=1, mininterval=0, ascii=True)
        super().__init__(*args, **kwargs)

    def _due(self) -> bool:
        if self.total:
            step = int(min(self.n / self.total, 1.0) / self._step + 1e-9)
            if step > self._last_step:
                self._last_step = step
                return True
            return False
        return time.monotonic() - self._last_line_t >= self._interval_s

    def _line(self) -> None:
        self._last_line_t, self._last_line_n = time.monotonic(), self.n
        self.fp.write(self.__str__() + "\n")
        self.fp.flush()

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """Writes a line when one is due; never moves the cursor or clears a line."""
        if msg is None and self._due():
            self._line()
        return False  # nothing to clear, so tqdm writes no carriage return after it

    def clear(self, nolock: bool = False) -> None:
        """Lines stay as written (tqdm.write clears bars before it prints)."""

    def close(self) -> None:
        """The last line (where the end was not written yet); then tqdm's own clean-up, with nothing to erase."""
        if not self.disable and self.n != self._last_line_n:
            self._line()
        self.leave = False
        super().close()


def progress_bar(iterable: Iterable | None = None, *, total: float | None = None, desc: str | None = None, unit: str = "it",
                 disable: bool = False, leave: bool = True, file: IO[str] | None = None, **kwargs: Any) -> tqdm:
    """tqdm's bar on a terminal, :class:`LineProgress` elsewhere.

    Args:
        iterable: What to iterate over, as for tqdm.
        total: The expected number of iterations.
        desc: The prefix of the bar or line.
        unit: The unit of an iteration.
        disable: Show nothing.
        leave: Keep the finished bar on a terminal (lines always stay).
        file: Where to write; standard error by default.
        **kwargs: Other tqdm options.
    """
    stream = file if file is not None else sys.stderr
    cls = tqdm if is_terminal(stream) else LineProgress
    return cls(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave, file=stream, **kwargs)


def is_terminal(stream: IO[str]) -> bool:
    """Whether ``stream`` is a terminal (a stream without ``isatty`` is not)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def write(message: str, file: IO[str] | None = None) -> None:
    """Prints a line without breaking the bars in progress (tqdm.write)."""
    tqdm.write(message, file=file)


def quiet_library_bars(stream: IO[str] | None = None) -> bool:
    """Turns off the libraries' own bars (transformers' "Loading weights", "Writing model shards", the hub's
    downloads) where ``stream`` (standard error by default) is not a terminal: each is a carriage-return bar of
    a second that a log keeps as one long line. Returns whether they were turned off."""
    import os

    if is_terminal(stream if stream is not None else sys.stderr):
        return False
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when huggingface_hub is imported
    if "transformers" in sys.modules:  # already imported: its switch reads the variable only once
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    return True
