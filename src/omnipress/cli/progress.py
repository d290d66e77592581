"""Which step of a run is going and for how long, on stderr (stdout keeps only the results)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    """Shows each step's label and the elapsed time on `stream` (default stderr).

    On a terminal one line is redrawn every `interval` seconds and erased when the step ends; elsewhere (a log, a
    pipe) one line is written when each step starts. `enabled=False` shows nothing.
    """

    def __init__(self, enabled: bool = True, stream: TextIO | None = None, interval: float = 0.5) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds since this display was made."""
        return time.perf_counter() - self.started

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        """Show `label` while the block runs."""
        if not self.enabled:
            yield
            return
        if not self._is_terminal():
            self._write(f"omnipress: {label} (elapsed {self.elapsed:.1f} s)\n")
            yield
            return
        done = threading.Event()
        start = time.perf_counter()
        ticker = threading.Thread(target=self._redraw, args=(label, start, done), daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()
            self._write("\r\033[K")

    def _redraw(self, label: str, start: float, done: threading.Event) -> None:
        while True:
            step = time.perf_counter() - start
            self._write(f"\r\033[Komnipress: {label} {step:.0f} s (total {self.elapsed:.0f} s)")
            if done.wait(self.interval):
                return

    def _is_terminal(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
