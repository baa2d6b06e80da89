"""Elapsed time and ETA of the progress lines (xrayflow.progress)."""

from __future__ import annotations

import time

from xrayflow.progress import Throttle, duration, eta


def test_duration_formats():
    assert duration(0.4) == "0 s"
    assert duration(59.6) == "1 min 00 s"
    assert duration(65) == "1 min 05 s"
    assert duration(7620) == "2 h 07 min"


def test_eta_from_the_mean_rate():
    assert eta(0, 10, 0.0) == "elapsed 0 s"  # no rate yet: no ETA
    assert eta(4, 10, 20.0) == "elapsed 20 s, ETA 30 s"  # 5 s per step, 6 steps left
    assert eta(10, 10, 50.0) == "elapsed 50 s"  # done


def test_throttle_is_due_every_period_and_on_the_last_step():
    t = Throttle(every_s=0.05)
    assert not t.due()
    assert t.due(last_step=True)
    time.sleep(0.06)
    assert t.due() and not t.due()
    assert t.elapsed >= 0.06
