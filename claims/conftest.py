"""Wiring of the claims suite: profile, registry, the analysis artifact, baselines, report.

- ``analysis``: the ``analysis.json`` of the selected profile, from
  ``engine.pipeline.runner.ensure_analysis(profile) -> Path`` (cached, xdist-safe under its own
  file lock). Documented override: ``STEP_NEURONS_ANALYSIS=<path to analysis.json>`` uses
  that file instead (planted artifacts in tests; a run computed elsewhere). If the artifact
  cannot be had (``UserError``: missing model, data or GPU), every claim test FAILS with the
  message; nothing is skipped.
- ``--profile paper``: each claim test asserts ``engine.outputs.claims.check`` (the paper's bounds); on
  a model that is not SeamlessM4T (``engine.outputs.claims.information_only``: a speech LLM) each is
  skipped with its verdict as the reason, and the report shows the verdicts as information.
- other profiles (default ``tiny``): each test asserts ``engine.tools.baselines.compare`` against
  ``fixtures/baselines/<profile>.json`` (a tolerance and its reason per number, set by the
  noise study ``python -m engine baselines``); ``--update-baselines`` rewrites its values at the
  end of the session (controller only under xdist), keeping the measured tolerances, and prints
  a unified diff.
- Report: on the controller, ``reports/<profile>-<timestamp>/`` (root overridable with
  ``STEP_NEURONS_REPORTS``) receives the report, claims.json and junit.xml (unless the user
  passed ``--junitxml``), and ``reports/latest`` is repointed at it.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.outputs import claims as C
from engine.tools import baselines as B

REPO = Path(__file__).resolve().parent.parent
ENV_ANALYSIS = "STEP_NEURONS_ANALYSIS"
_CLAIM_RE = re.compile(r"test_([RST]\d+)_")
_STATE = pytest.StashKey[dict]()
_CONFIG: list = []  # the session's config, for hooks that receive only a report


def _is_controller(config) -> bool:
    return not hasattr(config, "workerinput")


def resolve_analysis(profile: str) -> Path:
    """Path of the analysis.json to judge: the env override, else the pipeline's cache."""
    override = os.environ.get(ENV_ANALYSIS)
    if override:
        path = Path(override)
        if not path.is_file():
            raise UserError(f"{ENV_ANALYSIS}={override} is not a file; point it at an analysis.json "
                            f"or unset it to let the pipeline produce the '{profile}' artifact")
        return path
    try:
        from engine.pipeline.runner import ensure_analysis
    except ImportError as exc:
        raise UserError(f"engine.pipeline.runner.ensure_analysis is not importable ({exc}); set "
                        f"{ENV_ANALYSIS}=<path to analysis.json> to judge an existing artifact") from exc
    return Path(ensure_analysis(profile))


def load_baseline(profile: str) -> dict | None:
    """The profile's baseline (``STEP_NEURONS_BASELINES`` overrides its directory), or None."""
    return B.load(profile)


# ----------------------------------------------------------------------------- hooks

@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    state = {"t0": time.time(), "outcomes": {}, "out_dir": None}
    config.stash[_STATE] = state
    _CONFIG[:] = [config]
    if not _is_controller(config) or config.option.collectonly:
        return
    from engine.outputs.report import new_report_dir

    state["out_dir"] = new_report_dir(config.getoption("--profile"))
    if not getattr(config.option, "xmlpath", None):
        # junitxml's own pytest_configure runs after this (tryfirst) and opens the file then.
        config.option.xmlpath = str(state["out_dir"] / "junit.xml")


def _claim_of(nodeid: str) -> str | None:
    m = _CLAIM_RE.search(nodeid.rsplit("::", 1)[-1])
    return m.group(1) if m else None


def pytest_runtest_logreport(report):
    # Runs on the controller for every worker's report too (xdist forwards them).
    cid = _claim_of(report.nodeid)
    state = _config_state()
    if cid is None or state is None:
        return
    if report.when == "call" or report.failed or report.skipped:
        outcome = report.outcome if report.when == "call" else ("error" if report.failed else "skipped")
        prev = state["outcomes"].get(cid, {})
        if prev.get("outcome") in ("failed", "error") and outcome == "passed":
            return
        state["outcomes"][cid] = {"outcome": outcome, "message": _message(report) if report.failed else "",
                                  "baseline": prev.get("baseline")}


def _message(report) -> str:
    """The failure's own message, without traceback or source (pytest's output keeps those)."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return text[:3000]


def _config_state():
    return _CONFIG[0].stash.get(_STATE, None) if _CONFIG else None


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if not _is_controller(config) or config.option.collectonly:
        return
    state = config.stash.get(_STATE, None)
    if state is None or not state["outcomes"]:
        if state and state["out_dir"] is not None:
            _remove_empty(state["out_dir"], config)
        return
    profile = config.getoption("--profile")
    registry = C.load_registry()
    tr = config.pluginmanager.get_plugin("terminalreporter")
    write = (lambda s: tr.write_line(s)) if tr else print
    analysis, error, path = None, None, None
    try:
        path = resolve_analysis(profile)
        analysis = json.loads(path.read_text(encoding="utf-8"))
    except (UserError, OSError, ValueError) as exc:
        error = str(exc)
    verdicts = {}
    if analysis is not None:
        verdicts = {cid: C.check(cid, analysis, registry["claims"][cid]) for cid in registry["claims"]}
        if profile != "paper":
            unreadable = None
            try:
                baseline = load_baseline(profile)
            except UserError as exc:
                baseline, unreadable = None, str(exc)
            for cid in registry["claims"]:
                o = state["outcomes"].setdefault(cid, {"outcome": "not run", "message": ""})
                try:
                    measured = C.measurements(cid, analysis)
                except (KeyError, ValueError) as exc:
                    o["baseline"] = {"passed": False, "diff": f"cannot measure: {exc}"}
                    continue
                entry = (baseline or {}).get("claims", {}).get(cid)
                if entry is None:
                    o["baseline"] = {"passed": False, "diff": unreadable or "no baseline recorded"}
                else:
                    ok, moved, diff = B.compare(measured, entry)
                    o["baseline"] = {"passed": ok, "diff": diff, "moved": moved}
        if config.getoption("--update-baselines"):
            if profile == "paper":
                write("--update-baselines: baselines are for offline profiles; nothing written for 'paper'")
            else:
                write_baselines(profile, analysis, registry, write)
    if state["out_dir"] is None:
        return
    from engine.outputs.report import update_latest, write_report

    run_info = {"wall_time_s": time.time() - state["t0"], "analysis_path": path, "error": error,
                "junit": getattr(config.option, "xmlpath", None)}
    timing = Path(path).parent / "timing.json" if path else None
    if analysis is not None and timing is not None and timing.is_file():
        # the pipeline keeps wall time beside analysis.json so the artifact itself is reproducible
        analysis = {**analysis, "meta": {**analysis.get("meta", {}),
                                         **json.loads(timing.read_text(encoding="utf-8"))}}
    paths = write_report(analysis, verdicts, state["outcomes"], state["out_dir"], profile=profile,
                         registry=registry, run_info=run_info)
    update_latest(state["out_dir"])
    write(f"claims report: {paths['html']}")


def _remove_empty(out_dir: Path, config):
    # No claim test ran (e.g. -k filtered them all out): leave no empty report behind,
    # unless junit is being written there.
    if config.option.xmlpath and Path(config.option.xmlpath).parent == out_dir:
        return
    try:
        out_dir.rmdir()
    except OSError:
        pass


def write_baselines(profile: str, analysis: dict, registry: dict, write=print) -> Path:
    """Rewrite fixtures/baselines/<profile>.json from ``analysis`` (tolerances kept); print the diff."""
    try:
        old = load_baseline(profile)
    except UserError:
        old = None  # an old format: every number becomes unmeasured until the noise study runs
    path = B.write(profile, B.update_values(profile, analysis, old), log=write)
    write(f"tolerances kept from the noise study; numbers it has not measured are compared exactly until "
          f"`python -m engine baselines --profile {profile}` measures them")
    return path


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def profile(pytestconfig) -> str:
    return pytestconfig.getoption("--profile")


@pytest.fixture(scope="session")
def registry() -> dict:
    return C.load_registry()


@pytest.fixture(scope="session")
def analysis_path(profile) -> Path:
    try:
        return resolve_analysis(profile)
    except UserError as exc:
        message = str(exc)
    # failed outside the except block so the report shows the message alone, not a chain
    pytest.fail(f"cannot judge the claims on profile '{profile}':\n{message}", pytrace=False)


@pytest.fixture(scope="session")
def analysis(analysis_path) -> dict:
    try:
        return json.loads(Path(analysis_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        message = str(exc)
    pytest.fail(f"cannot read the analysis artifact {analysis_path}: {message}", pytrace=False)


@pytest.fixture(scope="session")
def baseline(profile, pytestconfig) -> dict | None:
    """The recorded regression baseline of a non-paper profile (None if not recorded, or when
    ``--update-baselines`` replaces an unreadable one)."""
    if profile == "paper":
        return None
    try:
        return load_baseline(profile)
    except UserError as exc:
        if pytestconfig.getoption("--update-baselines"):
            return None
        message = str(exc)
    pytest.fail(message, pytrace=False)


@pytest.fixture
def claim(profile, registry, analysis, baseline, pytestconfig):
    """``claim("R1")`` asserts claim R1 the way the selected profile judges it."""

    def judge(claim_id: str) -> C.Verdict:
        entry = registry["claims"][claim_id]
        verdict = C.check(claim_id, analysis, entry)
        if profile == "paper":
            why = C.information_only(analysis)
            if why:
                pytest.skip(f"information only ({why}): {verdict.detail}")
            if not verdict.applicable:
                pytest.skip(verdict.detail)
            assert verdict.passed, f"{verdict.detail}\n[{entry['source']}] {entry['statement']}"
            return verdict
        try:
            measured = C.measurements(claim_id, analysis)
        except (KeyError, ValueError) as exc:
            pytest.fail(f"{claim_id}: the '{profile}' artifact lacks what the claim measures: {exc}", pytrace=False)
        if pytestconfig.getoption("--update-baselines"):
            return verdict  # the controller rewrites the baseline file at session end
        recorded = (baseline or {}).get("claims", {}).get(claim_id)
        if recorded is None:
            pytest.fail(f"{claim_id}: no baseline in {B.path_of(profile)}; run "
                        f"`python -m engine baselines --profile {profile}` (measures each number's tolerance) or "
                        f"`pytest claims/ --profile {profile} --update-baselines`, review the diff and commit it",
                        pytrace=False)
        ok, _, diff = B.compare(measured, recorded)
        assert ok, (f"{claim_id} moved from its '{profile}' baseline beyond the measured noise (a model, data or "
                    f"library change?); if intended, rerun with --update-baselines:\n{diff}\n"
                    f"paper check, information only: {verdict.detail}")
        return verdict

    return judge
