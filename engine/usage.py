"""What this process uses: resident memory now and at its peak, and CPU time.

One source for each figure, read from Linux's ``/proc/self/status``: ``VmRSS`` (resident now)
and ``VmHWM`` (the high-water mark, resettable through ``/proc/self/clear_refs``). Not
``getrusage(...).ru_maxrss``: Linux carries that mark across ``execve``, so a child started by a
large parent would report the parent's peak. Off Linux, ``ru_maxrss`` is the fallback.
"""
from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_bytes() -> int:
    """Resident bytes of this process now (0 where ``/proc`` is absent)."""
    kib = _status_kib("VmRSS")
    return 0 if kib is None else kib * 1024


def peak_rss_bytes() -> int:
    """Peak resident bytes of this process since it started or since the last ``reset_peak()``."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def reset_peak() -> bool:
    """Set the peak back to the current resident size; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_above_now(fn) -> tuple[float, int]:
    """``(CPU seconds, peak resident bytes above the current size)`` of ``fn()``.

    Where the peak cannot be reset, only what is still resident after ``fn`` counts.
    """
    resettable = reset_peak()
    before = rss_bytes()
    t0 = cpu_seconds()
    fn()
    seconds = cpu_seconds() - t0
    peak = peak_rss_bytes() if resettable else before
    return seconds, max(0, max(peak, rss_bytes()) - before)


def cpu_seconds() -> float:
    """CPU seconds (user + system, every thread) of this process and its finished children.

    Costs are measured and compared in CPU time: on a shared machine wall time depends on what
    else runs, the work a stage does does not."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime
