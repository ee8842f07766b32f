"""Resumability, sharding and stage keys of the pipeline, on the tiny profile with few examples."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine import config, pipeline
from engine.run import RECORD_TASKS
from engine.errors import UserError
from engine.store import MatrixStore

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["data.n_identify=4", "data.n_steer=2", "record.rows_per_block=2", "model.batch_size=2",
         "record.max_new_tokens=12", "rank.k=20", "rank.k_sweep=[10, 20]", "steer.k=10", "rank.n_boot=4"]
RECORD = "data,speech,record"


def _cli(out, stages=RECORD, extra=(), env=None):
    cmd = [sys.executable, "-m", "engine", "run", "--profile", "tiny", "--out", str(out), "--stages", stages]
    for s in [*SMALL, *extra]:
        cmd += ["--set", s]
    full_env = {**os.environ, "STEP_NEURONS_QUIET": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return cmd, full_env


def _run(out, **kw):
    cmd, env = _cli(out, **kw)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _arrays(out):
    record = next((Path(out) / "tiny").glob("record-*"))
    arrays = {}
    for task in RECORD_TASKS:
        for matrix in sorted((record / task).iterdir()):
            if matrix.is_dir():
                arrays[f"{task}/{matrix.name}"] = MatrixStore(matrix).read()
        arrays[f"{task}/meta"] = json.loads((record / task / "meta.json").read_text())
    return record, arrays


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for name in a:
        if name.endswith("meta"):
            assert a[name] == b[name], name
        else:
            assert a[name].dtype == b[name].dtype and a[name].tobytes() == b[name].tobytes(), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    _run(out)
    return out, _arrays(out)[1]


@pytest.mark.slow
def test_sigkill_mid_record_resumes_without_redoing_and_is_bit_identical(tmp_path, reference):
    cmd, env = _cli(tmp_path)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    markers = []
    while time.time() < deadline and proc.poll() is None:
        markers = sorted(tmp_path.glob("tiny/record-*/S2T/encoder/blocks/*.json"))
        if len(markers) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    record = next(tmp_path.glob("tiny/record-*"))
    assert not (record / "COMPLETE.json").exists()
    done_before = {m: m.stat().st_mtime_ns for m in sorted((record / "S2T/encoder/blocks").glob("*.json"))}
    assert done_before
    _run(tmp_path)
    for marker, mtime in done_before.items():
        assert marker.stat().st_mtime_ns == mtime, f"{marker.name} was recorded again"
    _assert_identical(_arrays(tmp_path)[1], reference[1])


@pytest.mark.slow
def test_two_processes_with_gloo_record_the_same_store_as_one(tmp_path, reference):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        cmd, env = _cli(tmp_path, env={"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    record, arrays = _arrays(tmp_path)
    infos = [json.loads(m.read_text()) for m in sorted((record / "S2T/encoder/blocks").glob("*.json"))]
    assert len(infos) > 2
    _assert_identical(arrays, reference[1])


def test_stage_keys_change_with_what_affects_them():
    base = pipeline.Run(config.load_profile("tiny"))
    other_k = pipeline.Run(config.load_profile("tiny", ["rank.k=20"]))
    other_data = pipeline.Run(config.load_profile("tiny", ["data.seed=1"]))
    assert base.key("record") == other_k.key("record")
    assert base.key("compare") != other_k.key("compare")
    assert all(base.key(s) != other_data.key(s) for s in pipeline.STAGES)
    assert base.key("data") == pipeline.Run(config.load_profile("tiny")).key("data")


def test_missing_model_is_one_clear_error_before_any_work(tmp_path):
    cfg = config.load_profile("tiny", ["model.id='/nonexistent/model'"])
    with pytest.raises(UserError, match=r"missing:\n  model: '/nonexistent/model' not available"):
        pipeline.run_pipeline(cfg, out=tmp_path)
    assert not any(tmp_path.rglob("COMPLETE.json"))


def test_k_beyond_the_catalog_fails_before_any_work(tmp_path):
    cfg = config.load_profile("tiny", ["rank.k=100000"])
    with pytest.raises(UserError, match="k=100000"):
        pipeline.run_pipeline(cfg, out=tmp_path)
    assert not any(tmp_path.iterdir()) or not any(tmp_path.rglob("COMPLETE.json"))


def test_cli_reports_user_errors_in_one_line(tmp_path):
    cmd = [sys.executable, "-m", "engine", "run", "--profile", "tiny", "--out", str(tmp_path), "--set", "rank.k=-1"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: rank.k=-1 is invalid: use an integer >= 1"]


def test_paper_profile_offline_lists_every_missing_thing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    cfg = config.load_profile("paper")
    with pytest.raises(UserError) as err:
        pipeline.run_pipeline(cfg, out=tmp_path / "out")
    lines = str(err.value).splitlines()
    kinds = {line.strip().split(":")[0] for line in lines[1:]}
    assert {"model", "data"} <= kinds
    import torch

    assert ("GPU" in kinds) == (not torch.cuda.is_available())
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("COMPLETE.json"))


@pytest.mark.slow
def test_same_config_and_seed_give_byte_identical_artifacts(tmp_path):
    extra = ["data.n_identify=10", "steer.max_new_tokens=12"]
    for name in ("a", "b"):
        _run(tmp_path / name, stages=",".join(pipeline.STAGES), extra=extra)
    files = {}
    for name in ("a", "b"):
        root = tmp_path / name / "tiny"
        files[name] = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
                       if p.is_file() and p.name not in ("wall_time.json", "timing.json", ".lock")}
    assert files["a"].keys() == files["b"].keys()
    differing = [f for f in files["a"] if files["a"][f] != files["b"][f]]
    assert differing == []
    assert any(f.endswith("analysis.json") for f in files["a"])
