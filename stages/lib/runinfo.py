"""Wall time and peak memory of a stage, for its summary line and its manifest."""
from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunInfo:
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0


def peak_rss_mb() -> float:
    """This process's own peak resident memory. Linux's VmHWM belongs to the address space and starts
    afresh at exec; getrusage's ru_maxrss survives exec, so a child would report a larger parent's peak."""
    try:
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        return int(status["VmHWM"].split()[0]) / 1024  # kB
    except (OSError, KeyError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@contextmanager
def measured():
    info = RunInfo()
    start = time.perf_counter()
    try:
        yield info
    finally:
        info.wall_s = round(time.perf_counter() - start, 2)
        info.peak_rss_mb = round(peak_rss_mb(), 1)
