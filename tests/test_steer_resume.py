"""The steer stage resumes row by row: a run stopped inside it redoes only the rows it had not
finished, and writes the same bytes as an uninterrupted run (reduced tiny profile)."""
import json
import shutil

import pytest

from engine.pipeline import config, steering_run
from engine.pipeline import runner as pipeline
from engine.pipeline.stages.steer import CHECKPOINT_SUBDIR

SMALL = ["data.n_identify=4", "data.n_steer=2", "record.rows_per_block=2", "model.batch_size=2",
         "record.max_new_tokens=12", "rank.k=20", "rank.k_sweep=[10, 20]", "steer.k=10", "rank.n_boot=4",
         "steer.max_new_tokens=8", "data.langs=['deu', 'cmn']", "record.steps=[1, 6]"]
DONE_BEFORE_STOP = 5


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run (in this process, so float rounding matches the resumed one)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI tests' OMP_NUM_THREADS=1: two threads crawl on a shared machine
    out = tmp_path_factory.mktemp("uninterrupted")
    pipeline.run_pipeline(config.load_profile("tiny", SMALL), out=out)
    yield out
    torch.set_num_threads(threads)


def _files(directory):
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file()}


@pytest.mark.slow
def test_stopped_steer_stage_redoes_only_unfinished_rows_and_is_byte_identical(tmp_path, reference, monkeypatch,
                                                                                capsys):
    cfg = config.load_profile("tiny", SMALL)
    ref_run = pipeline.Run(cfg, reference)
    n_rows = len(json.loads((ref_run.dir("steer") / "steering_outputs.json").read_text()))
    assert n_rows > DONE_BEFORE_STOP + 2
    # the same upstream stages, without steer and report
    out = tmp_path / "out"
    shutil.copytree(reference, out, ignore=shutil.ignore_patterns("steer-*", "report-*", "wall_time.json"))
    real_generate = steering_run.generate
    calls = []

    def stopping(*args, **kwargs):
        if len(calls) == DONE_BEFORE_STOP:
            raise Stop("killed in the middle of the steer stage")
        calls.append(1)
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(steering_run, "generate", stopping)
    with pytest.raises(Stop):
        pipeline.run_pipeline(cfg, out=out)
    run = pipeline.Run(cfg, out)
    assert not run.done("steer")
    rows = run.dir("steer") / CHECKPOINT_SUBDIR
    saved = sorted(rows.glob("*.json"))
    assert len(saved) == DONE_BEFORE_STOP
    # a damaged checkpoint (a write cut short by hand) is regenerated, not trusted
    saved[-1].write_bytes(saved[-1].read_bytes()[:20])

    resumed = []
    monkeypatch.setattr(steering_run, "generate", lambda *a, **kw: resumed.append(1) or real_generate(*a, **kw))
    capsys.readouterr()
    pipeline.run_pipeline(cfg, out=out)
    assert f"steer: checkpoint {saved[-1]} is damaged" in capsys.readouterr().out
    assert len(resumed) == n_rows - DONE_BEFORE_STOP + 1  # finished rows were not redone, the damaged one was
    assert run.done("steer") and not rows.exists()  # checkpoints go once the stage is complete
    assert _files(run.dir("steer")).keys() - {"COMPLETE.json"} == {
        "steering.json", "steering_outputs.json", "steering_tables.md"}
    assert _files(run.dir("steer")) == _files(ref_run.dir("steer"))
    assert (run.dir("report") / "analysis.json").read_bytes() == (ref_run.dir("report") / "analysis.json").read_bytes()


def test_checkpoint_of_other_settings_is_not_reused(tmp_path):
    ids = ["s1/deu/ASR", "s2/deu/ASR"]
    import numpy as np

    outs = [{"example_id": i, "sentence_id": i.split("/")[0], "text": "x"} for i in ids]
    fp = steering_run.row_fingerprint("deu>cmn/ASR/6/median", ids, np.array([1, 2]), np.float32([0.5, 1]), None, 8, 2)
    steering_run.save_checkpoint(tmp_path, "deu>cmn/ASR/6/median", fp, outs)
    assert steering_run.load_checkpoint(tmp_path, "deu>cmn/ASR/6/median", fp) == outs
    for changed in [dict(neurons=np.array([1, 3])), dict(values=np.float32([0.5, 2])), dict(from_position=6),
                    dict(max_new_tokens=9), dict(batch_size=4), dict(example_ids=ids[:1])]:
        args = dict(example_ids=ids, neurons=np.array([1, 2]), values=np.float32([0.5, 1]), from_position=None,
                    max_new_tokens=8, batch_size=2) | changed
        other = steering_run.row_fingerprint("deu>cmn/ASR/6/median", **args)
        assert other != fp, changed
        assert steering_run.load_checkpoint(tmp_path, "deu>cmn/ASR/6/median", other) is None
