"""Wall time and peak memory of a stage, for its summary line and its manifest."""
from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class RunInfo:
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@contextmanager
def measured():
    info = RunInfo()
    start = time.perf_counter()
    try:
        yield info
    finally:
        info.wall_s = round(time.perf_counter() - start, 2)
        info.peak_rss_mb = round(peak_rss_mb(), 1)
