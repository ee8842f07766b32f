"""How the calibrations measure: the least time of repeated runs, a figure taken in a fresh stage
process, and the parallelism this process obtained while calibrating.

Calibrations are timed in CPU seconds (``engine.usage.cpu_seconds``: on a shared machine wall time
depends on what else runs). The CPU and wall seconds they spend are accounted here, so that the
cost model can turn CPU seconds into wall time at the parallelism obtained now (``parallelism``).
"""
from __future__ import annotations

import math
import subprocess
import sys
import time

from engine.files import REPO_ROOT
from engine.usage import cpu_seconds, rss_bytes

#: What every stage process imports before its work: a fresh interpreter does the same first.
_STAGE_IMPORTS = ("import torch, transformers, zarr\n"
                  "from transformers import SeamlessM4Tv2Model, AutoConfig\n"
                  "import engine.pipeline.runner, engine.model.catalog, engine.pipeline.store\n")

#: CPU and wall seconds spent in calibration since ``restart_accounting`` (their ratio is the
#: parallelism obtained now)
_SPENT = {"cpu": 0.0, "wall": 0.0}


def in_fresh_process(code: str) -> int:
    """The integer that ``code`` prints last, run in a new interpreter after the imports every
    stage makes; -1 if it fails."""
    try:
        out = subprocess.run([sys.executable, "-c", _STAGE_IMPORTS + code], capture_output=True, text=True,
                             timeout=600, cwd=REPO_ROOT, check=True)
        return int(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return -1


def stage_process_rss() -> int:
    """Resident bytes of a fresh stage process once it has imported what every stage imports
    (torch, transformers' SeamlessM4T v2, the pipeline), measured in a new interpreter: the
    calling process may hold anything (a model being built, other estimates). This process's own
    resident bytes if no interpreter could be started."""
    rss = in_fresh_process("from engine.usage import rss_bytes\nprint(rss_bytes())")
    return rss if rss >= 0 else rss_bytes()


def restart_accounting() -> None:
    """Forget the CPU and wall seconds accounted so far: one estimate's calibrations start here."""
    _SPENT.update(cpu=0.0, wall=0.0)


def account(cpu: float, wall: float) -> None:
    """Count ``cpu`` CPU seconds spent in ``wall`` wall seconds towards ``parallelism``."""
    _SPENT["cpu"] += cpu
    _SPENT["wall"] += wall


def parallelism() -> float:
    """CPU seconds per wall second of the CPU work accounted since ``restart_accounting``: about 2
    on an idle 2-core machine running torch, below 1 when others share the cores."""
    return _SPENT["cpu"] / max(_SPENT["wall"], 1e-9)


def best(fn, repeat: int = 3, *, wall_clock: bool = False) -> float:
    """Least CPU seconds (``wall_clock``: wall seconds, for work on a GPU) of ``repeat`` runs of
    ``fn()``, at least 1e-9."""
    least = math.inf
    for _ in range(repeat):
        c0, t0 = cpu_seconds(), time.perf_counter()
        fn()
        cpu, wall = cpu_seconds() - c0, time.perf_counter() - t0
        if not wall_clock:  # GPU work would distort the CPU parallelism measured here
            account(cpu, wall)
        least = min(least, wall if wall_clock else cpu)
    return max(least, 1e-9)
