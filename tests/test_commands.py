"""Every command in the README's table runs, on the tiny fixture or its smallest setting, and
ends with one JSON line. ``SMOKE`` names the test that does it for each command; the first test
holds the README and that table to each other, so a new command cannot go untested."""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.tools.cli import main

REPO = Path(__file__).resolve().parent.parent
SMOKE = {
    "run": "tests/test_commands.py::test_run_prints_json_last",
    "estimate": "tests/test_estimate.py::test_paper_estimate_is_computed_from_the_large_catalog_without_weights",
    "rehearse": "tests/test_rehearse.py::test_rehearsal_runs_every_stage_and_the_estimate_agrees_with_it",
    "claims": "tests/test_commands.py::test_claims_prints_json_last",
    "baselines": "tests/test_commands.py::test_baselines_prints_json_last",
    "catalog": "tests/test_beyond.py::test_cli_prints_v1_counts_as_last_json_line",
    "score": "tests/test_beyond.py::test_score_cyrillic_to_latin",
    "bench ap": "tests/test_ranking.py::test_bench_ap_command_last_line_is_json",
    "bench bootstrap": "tests/test_commands.py::test_bench_bootstrap_prints_json_last",
    "bench compare": "tests/test_commands.py::test_bench_compare_prints_json_last",
    "bench coverage": "tests/test_commands.py::test_bench_coverage_prints_json_last",
    "bench record": "tests/test_commands.py::test_bench_record_prints_json_last",
}


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def readme_commands() -> set[str]:
    """Command names in the first column of the README's command table."""
    names, in_section = set(), False
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            in_section = line.startswith("## Commands")
        if not in_section or not line.startswith("| `"):
            continue
        spans = re.findall(r"`([^`]+)`", line.split("|")[1])
        names.add(spans[0].split()[0] if spans[0].split()[0] != "bench" else "")
        names |= {" ".join(span.split()[:2]) for span in spans if span.startswith("bench ")}
    names.discard("")
    return names


def test_every_readme_command_has_a_smoke_test():
    assert readme_commands() == set(SMOKE), "README's command table and SMOKE disagree"
    for command, nodeid in SMOKE.items():
        path, name = nodeid.split("::")
        tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
        assert name in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}, (command, nodeid)


def test_run_prints_json_last(tiny_run, capsys):
    # the session's tiny run is finished: the command resumes it, checks it and reports
    assert main(["run", "--profile", "tiny", "--out", str(tiny_run)]) == 0
    out = capsys.readouterr().out
    figures = _last_json(out)
    assert figures["bytes_written"] > 0 and "analysis:" in out


@pytest.mark.slow
def test_claims_prints_json_last(tiny_run, tmp_path):
    analysis = next((tiny_run / "tiny").glob("report-*/analysis.json"))
    env = {**os.environ, "STEP_NEURONS_ANALYSIS": str(analysis), "STEP_NEURONS_REPORTS": str(tmp_path),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "engine", "claims", "--profile", "tiny", "--", "-k", "R8"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    summary = _last_json(proc.stdout)
    assert proc.returncode == summary["exit_code"] == 0, proc.stdout[-2000:]
    assert summary["report"].startswith(str(tmp_path)) and summary["summary"]


@pytest.mark.slow
def test_baselines_prints_json_last(tiny_run, tmp_path):
    # the study's smallest setting: the reference alone, on a copy of the finished tiny run
    shutil.copytree(tiny_run / "tiny", tmp_path / "work" / "reference" / "tiny")
    shutil.copytree(tiny_run / "cache" / "speech", tmp_path / "work" / "reference" / "cache" / "speech")
    env = {**os.environ, "STEP_NEURONS_BASELINES": str(tmp_path / "baselines")}
    proc = subprocess.run([sys.executable, "-m", "engine", "baselines", "--profile", "tiny", "--variants", "reference",
                           "--work", str(tmp_path / "work")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = _last_json(proc.stdout)
    assert summary["numbers"] == summary["exact"] + summary["parts"] > 0 and summary["noise"] == 0
    assert json.loads((tmp_path / "baselines" / "tiny.json").read_text())["format"] == 2


def test_bench_bootstrap_prints_json_last(capsys):
    assert main(["bench", "bootstrap", "--examples", "60", "--neurons", "16", "--langs", "3", "--resamples", "3",
                 "--full-resamples", "1", "--repeats", "1"]) == 0
    assert _last_json(capsys.readouterr().out)


def test_bench_compare_prints_json_last(capsys):
    assert main(["bench", "compare", "--neurons", "400", "--langs", "3", "--k", "20", "--k-sweep", "10,20",
                 "--repeats", "1"]) == 0
    figures = _last_json(capsys.readouterr().out)
    assert figures["benchmark"] == "compare" and figures["neurons"] == 400


def test_bench_coverage_prints_json_last(capsys):
    assert main(["bench", "coverage", "--replicates", "2", "--null-replicates", "1", "--sentences", "60",
                 "--neurons", "1000", "--k-sweep", "20,40", "--n-boot", "4"]) == 0
    figures = _last_json(capsys.readouterr().out)
    assert figures["benchmark"] == "coverage" and figures["replicates"] == 2
    assert set(figures["power"]) == {"R1", "R2", "R3"} and "diagonal_ratio.1-6" in figures["coverage"]


@pytest.mark.slow
def test_bench_record_prints_json_last(capsys):
    assert main(["bench", "record", "--examples", "2", "--batch-size", "2", "--steps", "1,2", "--layers", "1",
                 "--repeats", "1"]) == 0
    figures = _last_json(capsys.readouterr().out)
    assert figures["valid_at_last_step"] == {"text": 2, "speech": 2} and figures["overhead_vs_generate"] > 0
