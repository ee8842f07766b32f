"""One run per output root at a time: a second `engine run` is refused with one line naming the
holder, or with --wait queues behind it and reuses its work instead of redoing it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.pipeline import runner as pipeline

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["data.n_identify=4", "data.n_steer=2", "record.rows_per_block=2", "model.batch_size=2",
         "record.max_new_tokens=12", "rank.k=20", "rank.k_sweep=[10, 20]", "steer.k=10", "rank.n_boot=4"]


def _cmd(out, *extra):
    cmd = [sys.executable, "-m", "engine", "run", "--profile", "tiny", "--out", str(out), "--stages", "data,speech"]
    for s in SMALL:
        cmd += ["--set", s]
    return cmd + list(extra)


ENV = {**os.environ, "STEP_NEURONS_QUIET": "1", "OMP_NUM_THREADS": "1"}


def test_lock_is_exclusive_and_names_its_holder(tmp_path):
    with pipeline.output_lock(tmp_path):
        info = json.loads((tmp_path / pipeline.LOCK_FILE).read_text())
        assert info["pid"] == os.getpid()
        done = subprocess.run([sys.executable, "-c", "from engine.pipeline import runner as pipeline; "
                               f"pipeline.output_lock({str(tmp_path)!r}).__enter__()"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0
        assert f"is in use by process {os.getpid()} on" in done.stderr
    with pipeline.output_lock(tmp_path):  # released on exit: taken again at once
        pass


def test_second_run_exits_with_one_line_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    with pipeline.output_lock(out):
        done = subprocess.run(_cmd(out), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: output root {out} is in use by process {os.getpid()} on ")
    assert lines[0].endswith("rerun with --wait to queue behind it, or choose another --out")
    assert [p.name for p in out.iterdir()] == [pipeline.LOCK_FILE]  # nothing was done


@pytest.mark.slow
def test_two_runs_started_together_do_the_work_once(tmp_path):
    """Both start while the root is held, so both are released at the same instant: one works,
    the other waits for it and then finds every stage complete."""
    out = tmp_path / "out"
    with pipeline.output_lock(out):
        procs = [subprocess.Popen(_cmd(out, "--wait"), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        for proc in procs:  # both are queued before the gate opens
            line = proc.stderr.readline()
            while line and not line.startswith("waiting:"):
                line = proc.stderr.readline()
            assert line.startswith(f"waiting: output root {out} is in use by process {os.getpid()} "), line
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    walls = json.loads((out / "tiny" / "wall_time.json").read_text())
    printed = [json.loads(stdout.strip().splitlines()[-1])["wall_time_s"] for stdout, _ in results]
    # each stage's time was counted once, by the process that ran it: not the sum of both
    assert sorted(walls) == sorted(f"{s}-{pipeline.Run(_cfg(), out).key(s)}" for s in ("data", "speech"))
    assert sum(walls.values()) <= min(printed) + 0.2
    assert len(list((out / "tiny").glob("speech-*"))) == 1


def _cfg():
    from engine.pipeline import config

    return config.load_profile("tiny", SMALL)


def test_waiting_library_caller_reuses_finished_work(tmp_path, monkeypatch):
    """ensure_analysis (pytest -n workers) waits for the lock rather than failing."""
    calls = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda cfg, **kw: calls.append(kw))
    pipeline.ensure_analysis("tiny", SMALL, out=tmp_path)
    assert calls == [{"out": tmp_path, "wait": True}]
