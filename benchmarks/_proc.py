"""CPU time of processes from /proc: what a benchmark's servers and their database backends used,
whatever else the machine was doing (unlike latencies)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def cpu_ticks(pids: Iterable[int]) -> dict[int, int]:
    """utime + stime of each live process, in clock ticks, by pid."""
    ticks = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def cpu_seconds(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU used in between; a process started meanwhile (a new backend) counts in full."""
    used = sum(value - before.get(pid, 0) for pid, value in after.items())
    return used / os.sysconf("SC_CLK_TCK")
