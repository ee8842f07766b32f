"""Resumability, sharding and stage keys of the pipeline, on the tiny profile with few examples."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.errors import UserError
from engine.pipeline import config
from engine.pipeline import run as run_mod
from engine.pipeline import runner as pipeline
from engine.pipeline.run import RECORD_TASKS
from engine.pipeline.stages.record import stage_record
from engine.pipeline.store import MatrixStore

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
    for layout in sorted(record.rglob("layout.json")):
        arrays[layout.parent.relative_to(record).as_posix()] = MatrixStore(layout.parent).read()
    for task in RECORD_TASKS:
        arrays[f"{task}/meta"] = json.loads((record / task / "meta.json").read_text())
    return record, arrays


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for name in a:
        if name.endswith("meta"):
            assert a[name] == b[name], name
        else:
            assert a[name].dtype == b[name].dtype and a[name].tobytes() == b[name].tobytes(), name


@pytest.mark.slow
def test_sigkill_mid_record_resumes_without_redoing_and_is_bit_identical(tmp_path, whole):
    cmd, env = _cli(tmp_path, extra=TWO_PAIRS)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    markers = []
    while time.time() < deadline and proc.poll() is None:
        markers = sorted(tmp_path.glob("tiny/record-*/speech_encoder/blocks/*.json"))
        if len(markers) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    record = next(tmp_path.glob("tiny/record-*"))
    assert not (record / "COMPLETE.json").exists()
    done_before = {m: m.stat().st_mtime_ns for m in sorted((record / "speech_encoder/blocks").glob("*.json"))}
    assert done_before
    _run(tmp_path, extra=TWO_PAIRS)
    for marker, mtime in done_before.items():
        assert marker.stat().st_mtime_ns == mtime, f"{marker.name} was recorded again"
    _assert_identical(_arrays(tmp_path)[1], _arrays(whole[0])[1])  # the record stage of every stage's run


@pytest.mark.slow
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


ALL = ",".join(pipeline.STAGES)
#: Two steering pairs, one each way, stand for the eight: the same code steers every pair.
TWO_PAIRS = ["steer.max_new_tokens=12", 'steer.pairs=[["deu", "jpn"], ["cmn", "fra"]]',
             "record.cols_per_chunk=1024"]  # several chunks per matrix: rank and compare have shares to split


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out, world, extra=(), env=None):
    """``world`` processes of one launch, as torchrun starts them (gloo on this machine)."""
    port, procs = _free_port(), []
    for rank in range(world):
        cmd, full_env = _cli(out, stages=ALL, extra=extra, env={
            "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port), **(env or {})})
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    return procs


def _ended(procs, timeout):
    """Exit codes and stderr lines of every rank; fails the test if any is still running after
    ``timeout`` seconds (a hang), killing them all."""
    deadline, errs = time.monotonic() + timeout, []
    for p in procs:
        try:
            errs.append(p.communicate(timeout=max(0.1, deadline - time.monotonic()))[1])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"a rank was still running {timeout} s after the launch: it hangs")
    lines = [[x for x in e.splitlines() if x.strip() and not x.startswith("Loading weights")] for e in errs]
    return [p.returncode for p in procs], lines


def _artifacts(out) -> dict:
    root = Path(out) / "tiny"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in ("wall_time.json", "timing.json", ".lock")}


def _assert_same_artifacts(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert [f for f in a if a[f] != b[f]] == []


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """Every stage in one process at the smallest settings: the artifacts launches must equal."""
    out = tmp_path_factory.mktemp("whole")
    _run(out, stages=ALL, extra=TWO_PAIRS)
    files = _artifacts(out)
    assert any(f.endswith("analysis.json") for f in files)
    return out, files


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_every_stage_under_gloo_ranks_writes_what_one_process_writes(tmp_path, whole, world):
    # also the determinism check: separate runs of the same config and seed, byte-identical
    codes, errs = _ended(_launch(tmp_path, world, TWO_PAIRS), 300)
    assert codes == [0] * world, errs
    _assert_same_artifacts(_artifacts(tmp_path), whole[1])


@pytest.mark.slow
def test_an_error_on_any_rank_ends_every_rank_with_its_one_line(tmp_path):
    codes, errs = _ended(_launch(tmp_path / "a", 2, ["rank.k=-1"]), 60)  # a bad setting
    assert codes == [2, 2] and errs == [["error: rank.k=-1 is invalid: use an integer >= 1"]] * 2
    with pipeline.output_lock(tmp_path / "b"):  # the lock refused on rank 0; rank 1 must not wait
        # through torchrun's agent, which terminates the others as soon as one rank exits:
        # every rank still ends by itself with status 2, and the user reads the line first
        cmd, env = _cli(tmp_path / "b", stages=ALL)
        cmd[1:2] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    first = next(x for x in done.stderr.splitlines() if x.strip() and not x.startswith(("W", "E", "I")))
    ours = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert first.startswith("error: output root") and "is in use by process" in first, done.stderr[-3000:]
    assert ours == [first, first], done.stderr[-3000:]  # one line per rank, the same line
    assert done.stderr.count("exitcode  : 2") == 2 and "SIG" not in done.stderr.split("Failures:")[1], done.stderr


def test_a_rank_whose_peers_never_arrive_ends_with_one_line(tmp_path):
    cmd, env = _cli(tmp_path, stages=ALL, env={"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                                               "MASTER_PORT": str(_free_port()), "STEP_NEURONS_STALE_S": "2"})
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        rf"error: rank 1 could not meet the other 1 rank\(s\) at 127\.0\.0\.1:{env['MASTER_PORT']} within 4 s "
        r"\(\w+\); rerun the same launch", lines[0]), lines


@pytest.mark.slow
def test_a_killed_rank_ends_the_others_and_the_rerun_resumes_identically(tmp_path, whole):
    env = {"STEP_NEURONS_STALE_S": "5"}
    procs = _launch(tmp_path, 2, TWO_PAIRS, env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(tmp_path.glob("tiny/steer-*/rows/*.json")):
        assert procs[0].poll() is None, "the launch ended before a rank could be killed"
        time.sleep(0.05)
    procs[1].kill()  # mid-steer, a generation or more saved
    codes, errs = _ended(procs, 60)
    assert codes[0] == 2 and errs[0][-1].startswith("error: rank 1 stopped responding"), errs
    codes, errs = _ended(_launch(tmp_path, 2, TWO_PAIRS), 300)
    assert codes == [0, 0], errs
    assert any(x.startswith("steer: resuming") for x in errs[0]), errs
    _assert_same_artifacts(_artifacts(tmp_path), whole[1])


@pytest.mark.slow
def test_compare_killed_mid_stage_resumes_from_its_finished_chunks_and_steps(tmp_path, whole, monkeypatch):
    from engine.pipeline.stages import compare as compare_mod

    shutil.copytree(whole[0] / "tiny", tmp_path / "tiny")
    shutil.rmtree(next(tmp_path.glob("tiny/compare-*")))
    cfg = config.load_profile("tiny", [*SMALL, *TWO_PAIRS])
    real, calls = compare_mod.resampled_average_precision, []

    def dies_on_the_ninth_chunk(*args, **kwargs):  # step 1 done (2 sides x 3 chunks), step 6 begun
        calls.append(1)
        if len(calls) == 9:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI runs that wrote `whole` (OMP_NUM_THREADS=1): same sums
    try:
        monkeypatch.setattr(compare_mod, "resampled_average_precision", dies_on_the_ninth_chunk)
        with pytest.raises(KeyboardInterrupt):
            pipeline.run_pipeline(cfg, out=tmp_path, stages=("compare",))
        calls.clear()
        monkeypatch.setattr(compare_mod, "resampled_average_precision",
                            lambda *a, **k: (calls.append(1), real(*a, **k))[1])
        pipeline.run_pipeline(cfg, out=tmp_path, stages=("compare",))
    finally:
        torch.set_num_threads(threads)
    # 18 chunks in all (3 steps x 2 sides x 3): 6 of step 1 kept with its statistics, 2 of step 6 kept
    assert len(calls) == 18 - 6 - 2
    _assert_same_artifacts(_artifacts(tmp_path), whole[1])


@pytest.fixture
def small_disk(tmp_path):
    """A 7 MiB file system (tmpfs; needs the right to mount, else the test skips): the tiny run's
    speech cache fits, its activation store does not."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=7m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root): the disk-full case is untested")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_on_any_rank_ends_every_rank_and_the_rerun_resumes_identically(small_disk, whole):
    codes, errs = _ended(_launch(small_disk, 2, TWO_PAIRS), 120)
    assert codes == [2, 2], errs
    assert all(e[-1].startswith("error: disk full while writing") for e in errs) and errs[0][-1] == errs[1][-1], errs
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # space freed
    codes, errs = _ended(_launch(small_disk, 2, TWO_PAIRS), 300)
    assert codes == [0, 0], errs
    _assert_same_artifacts(_artifacts(small_disk), whole[1])


@pytest.mark.slow
def test_a_damaged_chunk_met_by_one_rank_ends_all_and_is_recorded_again_once(tmp_path, whole):
    shutil.copytree(whole[0] / "tiny", tmp_path / "tiny")
    shutil.rmtree(next(tmp_path.glob("tiny/rank-*")))
    record = next(tmp_path.glob("tiny/record-*"))
    chunk = record / "S2T/decoder_t1/data/m/c/1/0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only its checksum can tell
    chunk.write_bytes(bytes(data))
    codes, errs = _ended(_launch(tmp_path, 2, TWO_PAIRS), 60)
    assert codes == [2, 2], errs
    assert all(e[-1].startswith(f"error: corrupted chunk {chunk}") for e in errs), errs
    markers = sorted((record / "S2T/decoder_t1/blocks").glob("*.json"))
    before = {m.name: m.stat().st_mtime_ns for m in markers}
    assert "0000001.json" not in before  # invalidated for every rank
    codes, errs = _ended(_launch(tmp_path, 2, TWO_PAIRS), 300)
    assert codes == [0, 0], errs
    after = {m.name: m.stat().st_mtime_ns for m in sorted((record / "S2T/decoder_t1/blocks").glob("*.json"))}
    assert {n for n in after if before.get(n) != after[n]} == {"0000001.json"}  # that block alone, once
    _assert_same_artifacts(_artifacts(tmp_path), whole[1])


@pytest.fixture(scope="module")
def shared_record(tmp_path_factory):
    """The record stage run in-process, counting what the encoders are given."""
    from engine.model import recorder

    out = tmp_path_factory.mktemp("shared")
    cfg = config.load_profile("tiny", [*SMALL, "data.n_identify=2", "record.max_new_tokens=11"])
    encoded = {"speech": [], "text": []}
    original = recorder._encode

    def counting(lm, catalog, rec, batch, *options):
        encoded[batch[0].modality] += [(item.example_id.split("/")[0], item.lang) for item in batch]
        return original(lm, catalog, rec, batch, *options)

    recorder._encode = counting
    try:
        run = pipeline.run_pipeline(cfg, out=out, stages=("data", "speech", "record"))
    finally:
        recorder._encode = original
    return run, encoded


@pytest.mark.slow
def test_speech_encoder_runs_and_is_stored_once_per_utterance(shared_record):
    run, encoded = shared_record
    record = run.dir("record")
    metas = {t: json.loads((record / t / "meta.json").read_text()) for t in RECORD_TASKS}
    utterances = [tuple(e.split("/")[:2]) for e in metas["S2T"]["example_ids"]]
    assert utterances == [tuple(e.split("/")[:2]) for e in metas["ASR"]["example_ids"]]
    assert sorted(encoded["speech"]) == sorted(utterances)  # once each, not once per task
    assert len(encoded["text"]) == len(metas["T2T"]["example_ids"])
    matrices = sorted(p.parent.relative_to(record).as_posix() for p in record.rglob("layout.json"))
    steps = run.cfg["record"]["steps"]
    assert matrices == sorted(["speech_encoder", "text_encoder",
                               *(f"{task}/decoder_t{t}" for task in RECORD_TASKS for t in steps)])
    assert run_mod.matrices(run, "S2T")["encoder"] == run_mod.matrices(run, "ASR")["encoder"]


@pytest.mark.slow
def test_served_matrices_equal_each_task_recorded_on_its_own(shared_record):
    """Rankings cannot change: every matrix a task is served is byte for byte what recording
    that task alone (record_batches, same batches) stores."""
    from engine.model.recorder import record_batches
    from engine.pipeline.store import encode_values

    run, _ = shared_record
    r = run.cfg["record"]
    for task in RECORD_TASKS:
        examples = run_mod.task_examples(run, task, "identify")
        served = {name: MatrixStore(path) for name, path in run_mod.matrices(run, task).items()}
        dtype = served["encoder"].dtype
        for block in range(served["encoder"].n_blocks):  # blocks are the record stage's unit
            start, stop = served["encoder"].block_rows(block)
            alone = list(record_batches(run.model(), run.catalog(), run_mod.model_inputs(run, examples[start:stop]),
                                        steps=tuple(r["steps"]), batch_size=run.cfg["model"]["batch_size"],
                                        prefix=r["prefix"], max_new_tokens=r["max_new_tokens"]))
            expect = {"encoder": np.concatenate([b.encoder for b in alone])}
            expect.update({f"decoder_t{t}": np.concatenate([b.decoder[t] for b in alone]) for t in r["steps"]})
            for name, store in served.items():
                got = store.array[start:stop]  # the stored cells themselves
                assert got.tobytes() == encode_values(expect[name], dtype).tobytes(), (task, name, block)


@pytest.mark.slow
def test_activation_beyond_float16_fails_at_its_first_write_and_bfloat16_stores_it(tmp_path):
    """A planted decoder activation of 98,304 (a bfloat16 value, beyond float16's 65,504)."""
    planted, channel = 98304.0, 5

    def plant(module, inputs, output):
        output = output.clone()
        output[..., channel] = planted
        return output

    stored = {}
    for dtype in ("float16", "bfloat16"):
        run = pipeline.Run(config.load_profile("tiny", [*SMALL, "data.n_identify=2", "record.max_new_tokens=11",
                                                        f"record.store_dtype={dtype}"]), tmp_path)
        for stage in ("data", "speech"):
            if not run.done(stage):
                pipeline.STAGE_FUNCS[stage](run)
        handle = run.model().model.get_submodule("text_decoder.layers.1.ffn.fc2").register_forward_hook(plant)
        try:
            if dtype == "float16":
                with pytest.raises(UserError) as err:
                    stage_record(run)
                msg = str(err.value)
                assert "\n" not in msg
                assert "text_decoder layer 1 ffn.fc2 channel 5" in msg and "98304" in msg
                assert "record.store_dtype=bfloat16" in msg and "S2T decoder_t1" in msg
                assert not list(run.dir("record").rglob("blocks/*.json"))  # refused at the first write
            else:
                stage_record(run)
        finally:
            handle.remove()
    comp = next(c for c in run.catalog().stack("text_decoder") if c.layer == 1 and c.name == "ffn.fc2")
    for task in RECORD_TASKS:
        meta = json.loads((run.dir("record") / task / "meta.json").read_text())
        for t in run.cfg["record"]["steps"]:
            st = MatrixStore(run_mod.matrices(run, task)[f"decoder_t{t}"])
            assert st.dtype == "bfloat16"
            column = st.read()[:, comp.offset + channel]
            valid = np.array(meta["valid"][str(t)], bool)
            assert valid.any() and (column[valid] == planted).all() and np.isnan(column[~valid]).all()


def test_the_shared_speech_encoder_is_ranked_once_and_served_to_asr(tiny_run):
    # ASR reads S2T's utterances through one encoder store: its AP is S2T's, byte for byte, and
    # it equals AP computed afresh from the store with ASR's own row labels (sklearn's definition)
    from sklearn.metrics import average_precision_score

    from engine.pipeline.run import matrices
    from engine.pipeline.store import MatrixStore

    run = pipeline.Run(config.load_profile("tiny"), tiny_run)
    rank = run.dir("rank")
    for suffix in ("ap", "sep"):
        assert (rank / "ASR" / f"encoder_{suffix}.npy").read_bytes() == (rank / "S2T" / f"encoder_{suffix}.npy").read_bytes()
    meta = json.loads((run.dir("record") / "ASR" / "meta.json").read_text())
    X = np.asarray(MatrixStore(matrices(run, "ASR")["encoder"]).read(), dtype=np.float64)
    ap = np.load(rank / "ASR" / "encoder_ap.npy")
    langs = run.cfg["data"]["langs"]
    y = np.array([langs.index(lang) for lang in meta["langs"]])
    for li in range(len(langs)):
        for col in (0, X.shape[1] // 2, X.shape[1] - 1):
            assert ap[li, col] == pytest.approx(average_precision_score(y == li, X[:, col]), abs=1e-6)
