"""Elapsed time and estimated time to completion for the log lines of long loops."""

from __future__ import annotations

import time


def duration(seconds: float) -> str:
    """``seconds`` as ``42 s``, ``3 min 05 s`` or ``2 h 07 min``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def eta(done: int, total: int, elapsed_s: float) -> str:
    """``elapsed 1 min 05 s, ETA 2 min 10 s`` after ``done`` of ``total`` equal steps took
    ``elapsed_s`` seconds (ETA from the mean rate so far; none before the first step)."""
    text = f"elapsed {duration(elapsed_s)}"
    if 0 < done < total:
        text += f", ETA {duration(elapsed_s / done * (total - done))}"
    return text


class Throttle:
    """True at most every ``every_s`` seconds (and on the last step): periodic progress lines
    that stay few in non-interactive logs."""

    def __init__(self, every_s: float = 10.0):
        self.every_s = float(every_s)
        self.t0 = self.last = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def due(self, last_step: bool = False) -> bool:
        now = time.perf_counter()
        if last_step or now - self.last >= self.every_s:
            self.last = now
            return True
        return False
