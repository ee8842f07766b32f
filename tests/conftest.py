"""Fixtures shared by the tests: the tiny model, the tiny profile's finished run, and that run
again under the arithmetic any CPU reproduces. Helpers that are not fixtures are in
``tests/helpers.py``.

``tiny_lm`` / ``tiny_catalog``: the tiny SeamlessM4T v2 of ``fixtures/tiny_model`` loaded once per
test process, and its catalog; tests hook and run it, none changes its weights or settings (a test
that must, loads its own).

``tiny_run``: the root (``runs/``) of the tiny profile's one pipeline run that the claims suite
also judges, computed once per test session (``pipeline.ensure_analysis``: under ``-n auto`` one
worker computes while the others wait on the output root's lock). Tests read it or copy from it;
none modifies it.
"""
from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest

from engine.model.catalog import build_catalog
from engine.model.loader import TINY_MODEL_DIR, load_model
from engine.pipeline.runner import ensure_analysis
from engine.tools import baselines

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_lm():
    """The tiny SeamlessM4T v2 (``fixtures/tiny_model``), loaded once per test process."""
    return load_model(str(TINY_MODEL_DIR))


@pytest.fixture(scope="session")
def tiny_catalog(tiny_lm):
    """The tiny model's catalog (the paper's components, no extras)."""
    return build_catalog(tiny_lm.model)


@pytest.fixture(scope="session")
def tiny_run() -> Path:
    """Output root of the tiny profile's finished run (``runs/``, shared with the claims suite)."""
    ensure_analysis("tiny", out=REPO / "runs")
    return REPO / "runs"


@pytest.fixture(scope="session")
def pinned_tiny_run(tiny_run, tmp_path_factory, worker_id) -> tuple[Path, dict]:
    """The tiny profile run again in a fresh process under ``engine.tools.baselines.PINNED`` (every
    library's generic code path, one thread), its data and speech stages copied from ``tiny_run``
    (pure Python and espeak-ng, which no variable reaches): ``(output root, measurements)``.

    Computed once per test session: under ``-n auto`` the first worker runs it while the others
    wait on a lock in the session's shared temporary directory, then read the same run.
    """
    shared = tmp_path_factory.getbasetemp()
    shared = shared if worker_id == "master" else shared.parent
    out = shared / "pinned-tiny"
    with open(shared / "pinned-tiny.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = out / "measurements.json"
        if not done.is_file():
            measured = baselines.run_variant("tiny", baselines.PINNED, out, reuse=tiny_run)
            done.write_text(json.dumps(measured))
    return out, json.loads(done.read_text())
