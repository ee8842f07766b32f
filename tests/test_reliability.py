"""Damaged files are never trusted, and a full disk is one line that a rerun recovers from.

Unit cases work on the store and the speech cache directly; the pipeline cases damage a copy of
one finished reduced tiny run (or run it on a small tmpfs) and drive the CLI as a user would,
checking the exact line each case prints and that the rerun's artifacts are byte-identical to
an undamaged run's.
"""
import errno
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from engine.errors import UserError
from engine.pipeline.completion import COMPLETE, is_complete, mark_complete, verify_complete
from engine.pipeline.inputs.speech import SpeechRequest, record_path, synthesize
from engine.pipeline.inputs.tts import NaturalBackend
from engine.pipeline.inputs.wav import load_waveform
from engine.pipeline.store import MatrixStore

ROOT = Path(__file__).resolve().parent.parent
# a reduced tiny run: two languages (one steering pair), one step, short outputs
FAST = ["data.n_identify=4", "data.n_steer=2", "data.langs=['deu', 'cmn']", "record.steps=[1]",
        "record.rows_per_block=2", "model.batch_size=2", "record.max_new_tokens=6", "rank.k=20",
        "rank.k_sweep=[10, 20]", "rank.n_boot=4", "steer.k=10", "steer.max_new_tokens=6",
        "steer.random_control=false"]
ALL = "data,speech,record,rank,compare,steer,report"
UNSTABLE = ("wall_time.json", "timing.json", ".lock")  # differ between identical runs by design
DISK_FULL_LINE = "; free space or choose another --out, then rerun to resume"


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _argv(out, stages=ALL):
    argv = ["run", "--profile", "tiny", "--out", str(out), "--stages", stages]
    for s in FAST:
        argv += ["--set", s]
    return argv


def _cli(out, stages=ALL):
    """The CLI in a fresh process, as a user runs it: (exit status, stderr lines)."""
    env = {**os.environ, "STEP_NEURONS_QUIET": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "engine", *_argv(out, stages)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    return done.returncode, _lines(done.stderr)


def _cli_in_process(out, stages=ALL):
    """The same command run by ``engine.tools.cli.main`` in this process (no interpreter start-up, the
    cost that dominates these small runs); one thread, as ``_cli`` runs, so bytes match it."""
    import contextlib
    import io

    import torch

    from engine.tools.cli import main

    err, threads, quiet = io.StringIO(), torch.get_num_threads(), os.environ.get("STEP_NEURONS_QUIET")
    os.environ["STEP_NEURONS_QUIET"] = "1"
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(_argv(out, stages))
    finally:
        torch.set_num_threads(threads)
        if quiet is None:
            os.environ.pop("STEP_NEURONS_QUIET")
        else:
            os.environ["STEP_NEURONS_QUIET"] = quiet
    return rc, _lines(err.getvalue())


def _lines(stderr: str) -> list[str]:
    """stderr without library chatter (transformers' warnings, progress bars)."""
    return [line for line in stderr.splitlines() if line.startswith(("error:", "/", "..."))
            or "Traceback" in line or "Error" in line]


def _files(out) -> dict[str, bytes]:
    root = Path(out)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in UNSTABLE and not p.name.startswith(".")}


def _assert_same_files(out, reference):
    got, want = _files(out), _files(reference)
    assert sorted(got) == sorted(want)
    assert [f for f in want if got[f] != want[f]] == []


def _stage(out, stage) -> Path:
    return next((Path(out) / "tiny").glob(f"{stage}-*"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished reduced run, never modified (tests damage copies of it)."""
    out = tmp_path_factory.mktemp("finished")
    rc, lines = _cli(out)
    assert rc == 0, lines
    return out


@pytest.fixture
def copy(finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    return out


# ------------------------------------------------------------------------------------------------
# completion markers and row-block markers
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"\x00garbage{", b"{}", b"[1, 2]"])
def test_empty_or_garbage_complete_marker_is_not_complete(tmp_path, content):
    (tmp_path / "a.json").write_text("{}")
    mark_complete(tmp_path, {"key": "k"})
    assert is_complete(tmp_path)
    (tmp_path / COMPLETE).write_bytes(content)
    assert not is_complete(tmp_path)
    verdict = verify_complete(tmp_path)
    assert not verdict.complete
    assert [d.path.name for d in verdict.damaged] == [COMPLETE]


def test_marker_of_another_key_is_not_complete(tmp_path):
    mark_complete(tmp_path, {"key": "old"})
    verdict = verify_complete(tmp_path, expect={"key": "new"})
    assert not verdict.complete and "belongs to another run" in str(verdict.damaged[0])


@pytest.mark.parametrize("damage, problem", [
    (lambda p: p.write_bytes(b"[1, 2"), "has 5 bytes, not the 11 written"),
    (lambda p: p.write_bytes(b"[1, 2, 3, 5"), "differs from what was written (sha256 mismatch)"),
    (lambda p: p.unlink(), "is missing"),
])
def test_every_artifact_is_checked_against_its_recorded_size_and_sha256(tmp_path, damage, problem):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.json").write_bytes(b"[1, 2, 3, 4")
    (tmp_path / "y.json").write_text("{}")
    mark_complete(tmp_path, {"key": "k"})
    damage(tmp_path / "sub" / "x.json")
    assert not is_complete(tmp_path)
    verdict = verify_complete(tmp_path)
    assert not verdict.complete
    assert [str(d) for d in verdict.damaged] == [f"{tmp_path / 'sub' / 'x.json'} {problem}"]


def _filled(path, rng=np.random.default_rng(0)):
    st = MatrixStore.create(path, 8, 16, rows_per_block=2, cols_per_chunk=8)
    full = rng.standard_normal(st.shape).astype(np.float16)
    for b in range(st.n_blocks):
        s, e = st.block_rows(b)
        st.write_block(b, full[s:e], {"ids": list(range(s, e))})
    return st, full


def test_damaged_row_block_marker_is_named_and_recorded_again(tmp_path, capsys):
    st, full = _filled(tmp_path / "m")
    marker = tmp_path / "m" / "blocks" / "0000001.json"
    marker.write_bytes(marker.read_bytes()[:9])
    fresh = MatrixStore(tmp_path / "m")
    assert fresh.pending_blocks() == [1]
    assert capsys.readouterr().err.splitlines() == [
        f"{marker} is not a whole row block marker (not valid JSON); row block 1 of {tmp_path / 'm'} "
        "will be recorded again"]
    fresh.write_block(1, full[2:4], {"ids": [2, 3]})
    np.testing.assert_array_equal(MatrixStore(tmp_path / "m").read(), full)


def test_corrupted_chunk_invalidates_just_its_row_block(tmp_path):
    st, full = _filled(tmp_path / "m")
    chunk = tmp_path / "m" / "data" / "m" / "c" / "2" / "1"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    with pytest.raises(UserError) as err:
        MatrixStore(tmp_path / "m").read()
    assert str(err.value) == (f"corrupted chunk {chunk} (checksum mismatch); row block(s) [2] of {tmp_path / 'm'} "
                              "invalidated: rerun to record them again")
    again = MatrixStore.create(tmp_path / "m", 8, 16, rows_per_block=2, cols_per_chunk=8)
    assert again.pending_blocks() == [2]
    again.write_block(2, full[4:6], {"ids": [4, 5]})
    np.testing.assert_array_equal(MatrixStore(tmp_path / "m").read(), full)


def test_matrix_without_layout_does_not_reuse_its_markers(tmp_path):
    _filled(tmp_path / "m")
    (tmp_path / "m" / "layout.json").unlink()
    again = MatrixStore.create(tmp_path / "m", 8, 16, rows_per_block=2, cols_per_chunk=8)
    assert again.pending_blocks() == [0, 1, 2, 3]


def test_garbled_layout_is_named_and_its_matrix_recorded_again(tmp_path, capsys):
    _filled(tmp_path / "m")
    (tmp_path / "m" / "layout.json").write_bytes(b"{")
    again = MatrixStore.create(tmp_path / "m", 8, 16, rows_per_block=2, cols_per_chunk=8)
    assert again.pending_blocks() == [0, 1, 2, 3]
    assert capsys.readouterr().err.splitlines() == [
        f"{tmp_path / 'm' / 'layout.json'} is not a whole matrix layout (not valid JSON); "
        f"recording the matrix {tmp_path / 'm'} again"]


def test_garbled_wall_time_record_restarts_the_count(tmp_path, capsys):
    from engine.pipeline import config
    from engine.pipeline import runner as pipeline

    run = pipeline.Run(config.load_profile("tiny"), out=tmp_path)
    run.root.mkdir(parents=True)
    (run.root / "wall_time.json").write_bytes(b"\x00\x00")
    assert pipeline._total_wall(run) == 0.0
    assert capsys.readouterr().err.splitlines() == [
        f"{run.root / 'wall_time.json'} is not a whole record of wall times (not valid JSON); "
        "counting wall time afresh"]


# ------------------------------------------------------------------------------------------------
# speech cache
# ------------------------------------------------------------------------------------------------
class Tone:
    """A deterministic stand-in synthesiser: a tone whose length depends on the text."""

    name = "tone"

    def voice(self, lang):
        return f"tone-{lang}"

    def version(self):
        return "1"

    def input_text(self, sentence, lang):
        return sentence.texts[lang]

    def synthesize(self, text, lang):
        n = 16_000 + 1000 * len(text)
        return (0.3 * np.sin(np.arange(n) * 0.05)).astype(np.float32)


def _requests(texts):
    return [SpeechRequest(f"id{i}", "deu", t) for i, t in enumerate(texts)]


def test_truncated_cached_wav_is_synthesised_again_with_one_line(tmp_path, capsys):
    first = synthesize(_requests(["eins", "zwei"]), Tone(), tmp_path)
    wav = Path(first.paths[("id1", "deu")])
    wav.write_bytes(wav.read_bytes()[:30_000])  # cut mid-data, as a killed copy or full disk would
    second = synthesize(_requests(["eins", "zwei"]), Tone(), tmp_path)
    assert (second.n_cached, second.n_synthesized) == (1, 1)
    assert capsys.readouterr().err.splitlines() == [
        f"speech cache {wav} is damaged (30000 bytes, not the {first.records[str(wav)]['size']} written); "
        "synthesising it again"]
    np.testing.assert_array_equal(load_waveform(wav), Tone().synthesize("zwei", "deu"))
    assert second.records == first.records
    assert first.records[str(wav)]["n_samples"] == 16_000 + 4000


def test_altered_cached_wav_is_synthesised_again(tmp_path, capsys):
    first = synthesize(_requests(["eins"]), Tone(), tmp_path)
    wav = Path(first.paths[("id0", "deu")])
    raw = bytearray(wav.read_bytes())
    raw[-10] ^= 0x40
    wav.write_bytes(bytes(raw))
    assert synthesize(_requests(["eins"]), Tone(), tmp_path).n_synthesized == 1
    assert "sha256 differs from what was written" in capsys.readouterr().err


def test_wav_without_its_record_is_not_trusted(tmp_path, capsys):
    first = synthesize(_requests(["eins"]), Tone(), tmp_path)
    record_path(Path(first.paths[("id0", "deu")])).unlink()  # e.g. killed between the two writes
    assert synthesize(_requests(["eins"]), Tone(), tmp_path).n_synthesized == 1
    assert capsys.readouterr().err == ""


def test_truncated_natural_recording_is_an_error_naming_it(tmp_path):
    rec = tmp_path / "rec.wav"
    wavfile.write(rec, 16_000, (np.sin(np.arange(40_000) * 0.01) * 2 ** 14).astype(np.int16))
    rec.write_bytes(rec.read_bytes()[:30_000])
    backend = NaturalBackend({("deu", "eins"): rec})
    with pytest.raises(UserError, match=rf"audio file {rec} is truncated \(Reached EOF prematurely"):
        synthesize(_requests(["eins"]), backend, tmp_path / "cache")


# ------------------------------------------------------------------------------------------------
# full disks
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path):
    """A directory on its own tmpfs (``mount -t tmpfs``), so writes meet a real ENOSPC."""
    mounted = []

    def make(size: int) -> Path:
        path = tmp_path / f"fs{len(mounted)}"
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); "
                        "the disk-full cases need root and mount permission")
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(fs: Path, leave: int) -> Path:
    """Occupy the file system ``fs`` until only about ``leave`` bytes are free."""
    filler = fs / f"filler-{uuid.uuid4().hex}"
    free = os.statvfs(fs).f_bavail * os.statvfs(fs).f_frsize
    with open(filler, "wb") as fh:
        try:
            fh.write(b"\0" * max(0, free - leave))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_disk_full_while_synthesising_is_one_line_and_resumes(small_fs, capfd):
    fs = small_fs(4 << 20)
    filler = _fill(fs, 150_000)  # room for a few utterances, not all of them
    requests = _requests([f"Satz {i}" for i in range(12)])
    with pytest.raises(UserError) as err:
        synthesize(requests, Tone(), fs / "cache")
    assert str(err.value).startswith("disk full while writing ") and str(err.value).endswith(DISK_FULL_LINE)
    assert not [p for p in fs.rglob("*") if p.name.endswith(".tmp")]
    filler.unlink()
    result = synthesize(requests, Tone(), fs / "cache")
    assert result.n_cached >= 1 and result.n_cached + result.n_synthesized == 12
    assert "damaged" not in capfd.readouterr().err  # nothing half-written was left to be found
    for (sid, lang), path in result.paths.items():
        np.testing.assert_array_equal(load_waveform(path), Tone().synthesize(requests[int(sid[2:])].text, lang))


@pytest.mark.slow
def test_every_stage_stops_on_a_full_disk_with_one_line_and_resumes(finished, small_fs):
    """Each stage in turn meets a disk with room for half of what it writes: one line, exit 2,
    no temporary left, not marked complete; after freeing space the rerun finishes it, and the
    whole run ends byte-identical to a run that never met a full disk."""
    stage_bytes = {}
    for stage in ALL.split(","):
        files = [p for p in _stage(finished, stage).rglob("*") if p.is_file()]
        if stage == "speech":
            files += [p for p in (finished / "cache").rglob("*") if p.is_file()]
        stage_bytes[stage] = sum(p.stat().st_size for p in files)
    fs = small_fs(4 * sum(stage_bytes.values()) + (8 << 20))
    out = fs / "out"
    stages = ALL.split(",")
    for i, stage in enumerate(stages):
        filler = _fill(fs, stage_bytes[stage] // 2)
        rc, lines = _cli_in_process(out, ",".join(stages[:i + 1]))
        assert rc == 2 and not [line for line in lines if "Traceback" in line], (stage, lines)
        assert lines[-1].startswith("error: disk full while writing ") and lines[-1].endswith(DISK_FULL_LINE), lines
        assert not [p for p in fs.rglob("*") if p.name.endswith((".tmp", ".partial"))], stage
        assert not (next((out / "tiny").glob(f"{stage}-*"), fs) / COMPLETE).exists(), stage
        filler.unlink()
        rc, lines = _cli_in_process(out, ",".join(stages[:i + 1]))
        assert rc == 0, (stage, lines)
    _assert_same_files(out, finished)


# ------------------------------------------------------------------------------------------------
# damaged artifacts in a finished run
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_damaged_artifacts_are_named_and_exactly_they_are_recomputed(copy, finished):
    report = _stage(copy, "report")
    (report / "analysis.json").write_bytes((report / "analysis.json").read_bytes()[:1000])
    (_stage(copy, "compare") / COMPLETE).write_bytes(b"")
    (_stage(copy, "data") / COMPLETE).write_text("garbage")
    record = _stage(copy, "record")
    marker = record / "text_encoder" / "blocks" / "0000001.json"
    marker.write_bytes(marker.read_bytes()[:9])
    untouched = {p: p.stat().st_mtime_ns for p in (record / "speech_encoder" / "blocks").glob("*.json")}
    ap = _stage(copy, "rank") / "ASR" / "decoder_t1_ap.npy"
    raw = bytearray(ap.read_bytes())
    raw[-3] ^= 0x01
    ap.write_bytes(bytes(raw))
    wav = next((copy / "cache" / "speech").rglob("*.wav"))
    wav.write_bytes(wav.read_bytes()[:len(wav.read_bytes()) // 3])

    rc, lines = _cli(copy)
    assert rc == 0, lines
    assert not [line for line in lines if "Traceback" in line]
    assert f"{_stage(copy, 'data') / COMPLETE} is not a whole completion marker (not valid JSON); " \
           "computing the data stage again" in lines
    assert any(line.startswith(f"{wav} is damaged (") and line.endswith("; synthesising it again") for line in lines)
    assert f"{marker} has 9 bytes, not the {len((finished / marker.relative_to(copy)).read_bytes())} written; " \
           "recording what it covers again" in lines
    assert f"{ap} differs from what was written (sha256 mismatch); computing the rank stage again" in lines
    assert f"{_stage(copy, 'compare') / COMPLETE} is not a whole completion marker (not valid JSON); " \
           "computing the compare stage again" in lines
    assert any(line.startswith(f"{report / 'analysis.json'} has 1000 bytes, not the ") for line in lines)
    for p, mtime in untouched.items():  # only the damaged block was recorded again
        assert p.stat().st_mtime_ns == mtime, p
    _assert_same_files(copy, finished)


@pytest.mark.slow
def test_deleting_a_matrix_and_rerunning_rebuilds_it(copy, finished):
    matrix = _stage(copy, "record") / "ASR" / "decoder_t1"
    shutil.rmtree(matrix)
    rc, lines = _cli(copy)
    assert rc == 0, lines
    assert f"{matrix / 'layout.json'} is missing; recording what it covers again" in lines
    _assert_same_files(copy, finished)


@pytest.mark.slow
def test_corrupted_chunk_advice_works_when_followed_literally(copy, finished):
    for stage in ("rank", "compare", "steer", "report"):  # the record stage just finished: rank reads it
        shutil.rmtree(_stage(copy, stage))
    chunk = _stage(copy, "record") / "S2T" / "decoder_t1" / "data" / "m" / "c" / "1" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    stages = "data,speech,record,rank"
    rc, lines = _cli(copy, stages)
    assert rc == 2
    assert lines[-1].startswith(f"error: corrupted chunk {chunk} (checksum mismatch); row block(s) [")
    assert lines[-1].endswith("invalidated: rerun to record them again")
    assert not [line for line in lines if "Traceback" in line]
    rc, lines = _cli(copy, stages)  # "rerun": the same command again
    assert rc == 0, lines
    got, want = _files(copy), _files(finished)
    assert {f: b for f, b in got.items() if "/rank-" in f or "/record-" in f} == \
           {f: b for f, b in want.items() if "/rank-" in f or "/record-" in f}


def test_read_only_api_names_a_damaged_artifact(tmp_path):
    """engine.open_run trusts nothing it cannot verify either, and changes nothing."""
    from engine.outputs.results import _whole

    (tmp_path / "analysis.json").write_text('{"meta": {}}')
    mark_complete(tmp_path, {"key": "k"})
    assert _whole(tmp_path) == tmp_path
    (tmp_path / "analysis.json").write_text('{"meta": {}')
    with pytest.raises(UserError, match=rf"^{tmp_path / 'analysis.json'} has 11 bytes, not the 12 written; rerun"):
        _whole(tmp_path)
    assert (tmp_path / COMPLETE).exists()
