"""Settings and combinations the later stages need are refused before the first stage starts,
each with one line naming the setting and the fix; FLEURS from a local copy (data.fleurs_root)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.pipeline import config
from engine.pipeline import runner as pipeline
from engine.pipeline.inputs.fleurs import select_fleurs

ROOT = Path(__file__).resolve().parent.parent
FLEURS = ROOT / "fixtures" / "fleurs"
SMALL = ["data.n_identify=4", "data.n_steer=2", "record.rows_per_block=2", "model.batch_size=2",
         "record.max_new_tokens=12", "rank.k=20", "rank.k_sweep=[10, 20]", "steer.k=10", "rank.n_boot=4"]


def _nothing_done(out: Path) -> bool:
    return not out.exists() or not any(out.rglob("COMPLETE.json"))


@pytest.mark.parametrize("override, shown", [("model.dtype=float8", "model.dtype='float8'"),
                                             ("record.rows_per_block=0", "record.rows_per_block=0"),
                                             ("model.batch_size=0", "model.batch_size=0"),
                                             ("record.store_dtype=int3", "record.store_dtype='int3'")])
def test_cli_refuses_bad_settings_before_the_data_stage(tmp_path, override, shown):
    cmd = [sys.executable, "-m", "engine", "run", "--profile", "tiny", "--out", str(tmp_path / "out"),
           "--stages", "data", "--set", override]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "STEP_NEURONS_QUIET": "1"})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {shown} is invalid: use ")
    assert not (tmp_path / "out").exists()


def test_languages_without_a_steering_pair_fail_before_any_stage(tmp_path):
    cfg = config.load_profile("tiny", [*SMALL, "data.langs=['deu', 'spa']"])
    with pytest.raises(UserError, match=r"data.langs=\['deu', 'spa'\] contains no steering pair"):
        pipeline.run_pipeline(cfg, out=tmp_path)
    assert _nothing_done(tmp_path)


def test_stage_without_its_inputs_fails_before_any_stage(tmp_path):
    cfg = config.load_profile("tiny", SMALL)
    with pytest.raises(UserError, match=r"stage rank needs the record stage\(s\), which are not complete"):
        pipeline.run_pipeline(cfg, out=tmp_path, stages=("rank",))
    assert _nothing_done(tmp_path)


def test_missing_local_model_directory_is_not_sent_to_the_hub(tmp_path):
    cfg = config.load_profile("tiny", ["model.id='/nonexistent/model'"])
    with pytest.raises(UserError) as err:
        pipeline.run_pipeline(cfg, out=tmp_path)
    message = str(err.value)
    assert "model: '/nonexistent/model' not available: the directory /nonexistent/model does not exist" in message
    assert "set model.id to a local SeamlessM4T v2 directory" in message
    assert "hf download" not in message
    assert _nothing_done(tmp_path)


def test_missing_fasttext_model_is_listed_before_any_work(tmp_path):
    cfg = config.load_profile("tiny", [*SMALL, f"steer.fasttext_model='{tmp_path / 'lid.176.bin'}'"])
    with pytest.raises(UserError, match=r"steer: steer.fasttext_model=.*lid.176.bin' is not a file"):
        pipeline.run_pipeline(cfg, out=tmp_path / "out")
    assert _nothing_done(tmp_path / "out")


# --- FLEURS from a local copy ------------------------------------------------------------------
def _fleurs_cfg(root, *extra):
    return config.load_profile("tiny", [*SMALL, "data.source='fleurs'", f"data.fleurs_root='{root}'", *extra])


@pytest.fixture
def no_hub(monkeypatch):
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError("the Hub was contacted although data.fleurs_root is set")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_fleurs_root_is_read_without_the_hub(tmp_path, no_hub):
    cfg = _fleurs_cfg(FLEURS, "data.n_identify=6", "data.n_steer=2")
    run = pipeline.run_pipeline(cfg, out=tmp_path, stages=("data",))
    selection = json.loads((run.dir("data") / "selection.json").read_text())
    oracle = select_fleurs(cfg["data"]["langs"], n=8, seed=0, n_steer=2, root=FLEURS)
    assert [s["sentence_id"] for s in selection["sentences"]] == [s.sentence_id for s in oracle.sentences]
    assert selection["source"] == "fleurs" and selection["steer_ids"] == list(oracle.steer_ids)


def test_fleurs_root_too_small_names_the_settings(tmp_path, no_hub):
    with pytest.raises(UserError, match=r"data.n_identify \+ data.n_steer = 12 exceeds the 10 FLEURS sentences "
                                        r"common to English and data.langs; lower data.n_identify to at most 8"):
        pipeline.run_pipeline(_fleurs_cfg(FLEURS, "data.n_identify=10"), out=tmp_path / "out")
    assert _nothing_done(tmp_path / "out")


def test_fleurs_root_that_is_not_a_directory_is_listed(tmp_path, no_hub):
    with pytest.raises(UserError, match=r"data: data.fleurs_root='.*nowhere' is not a directory"):
        pipeline.run_pipeline(_fleurs_cfg(tmp_path / "nowhere"), out=tmp_path / "out")


def test_empty_fleurs_file_is_an_error_naming_it(tmp_path, no_hub):
    import shutil

    copy = tmp_path / "fleurs"
    shutil.copytree(FLEURS, copy)
    empty = copy / "data" / "fr_fr" / "dev.tsv"
    empty.write_text("")
    with pytest.raises(UserError, match=rf"{empty} holds no transcription rows: re-download"):
        pipeline.run_pipeline(_fleurs_cfg(copy), out=tmp_path / "out")
    assert _nothing_done(tmp_path / "out")
