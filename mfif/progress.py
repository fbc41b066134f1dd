"""Progress of long work, for every command: a tqdm bar where stderr is a terminal; in logs and
pipes no bar (a bar there is one endless line of carriage returns) and no tqdm import, only the
plain lines the command prints (one per epoch or stage). tqdm missing, or ``enabled=False``
(``--quiet``), also means no bar: progress never stops the work.

    with Progress(total=len(items), desc="evaluate", unit="pair") as bar:
        for item in items:
            ...
            bar.update(1)
    for frame in Progress(stream, total=n, unit="frame", desc="fusing"):
        ...
"""

from __future__ import annotations

import sys
import time


def on_terminal(stream=None) -> bool:
    """Whether ``stream`` (default stderr, where bars go) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def format_seconds(seconds: float) -> str:
    """'42 s', '3 min 05 s', '2 h 07 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """A tqdm bar over ``iterable`` (or updated by hand with :meth:`update`) on a terminal, else
    nothing. ``options`` go to tqdm (total, desc, unit, position, leave, ...). ``log``: when there
    is no bar, print one plain line to stderr at :meth:`close` ('desc: N units in T s'), for a
    stage that prints nothing else."""

    def __init__(self, iterable=None, *, enabled: bool = True, log: bool = False, **options) -> None:
        self.iterable = iterable
        self.total = options.get("total")
        self.desc = options.get("desc", "")
        self.unit = options.get("unit", "it")
        self.log = log
        self.count = 0
        self.started = time.perf_counter()
        self.bar = None
        if enabled and on_terminal(options.get("file")):
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(iterable, **{"dynamic_ncols": True, **options})
        self._closed = False

    @property
    def shown(self) -> bool:
        """Whether a bar is on the terminal."""
        return self.bar is not None

    def __iter__(self):
        try:
            for item in (self.iterable if self.bar is None else self.bar):
                self.count += 1
                yield item
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(n)

    def set_postfix_str(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def note(self, message: str, file=None) -> None:
        """Print a line (to stderr, or ``file``) without breaking the bar."""
        file = sys.stderr if file is None else file
        if self.bar is None:
            print(message, file=file, flush=True)
        else:
            self.bar.write(message, file=file)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.log:
            units = self.unit if self.count == 1 else self.unit + "s"
            print(f"{self.desc}: {self.count} {units} in {format_seconds(time.perf_counter() - self.started)}",
                  file=sys.stderr, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
