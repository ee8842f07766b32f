import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.model.catalog import build_catalog
from engine.tools import rehearse

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "fixtures" / "tiny_model"
#: the paper profile's settings shrunk to the tiny architecture (its k must fit 2 layers of width 96)
#: and to one steering pair (deu -> jpn) without the random control, so the test takes about a minute
SMALL = ["rank.k=20", "rank.k_sweep=[10, 20]", "steer.k=10", "rank.n_boot=2", "steer.max_new_tokens=12",
         "record.max_new_tokens=11", 'data.langs=["deu", "jpn"]', "steer.random_control=false"]


def test_depth_cut_keeps_every_width_of_large():
    from transformers import SeamlessM4Tv2Config

    large, cut = SeamlessM4Tv2Config(), rehearse.model_config(None, 2)
    for name in ("hidden_size", "vocab_size", "decoder_ffn_dim", "encoder_ffn_dim", "speech_encoder_intermediate_size",
                 "decoder_attention_heads", "speech_encoder_attention_heads"):
        assert getattr(cut, name) == getattr(large, name)
    assert all(getattr(cut, n) == 2 for n in rehearse.STACK_LAYERS)
    full, small = build_catalog(large), build_catalog(cut)
    for stack in ("speech_encoder", "text_encoder", "text_decoder"):
        assert small.n_neurons(stack) * 12 == full.n_neurons(stack)  # 24 layers -> 2, same width per layer


def test_built_model_loads_in_the_target_dtype_with_matching_language_tokens(tmp_path, monkeypatch):
    from safetensors import safe_open

    from engine.model.loader import load_model
    from engine.science.languages import PAPER_LANGS

    mcfg = rehearse.model_config(str(TINY), 1)
    d = rehearse.build_model(mcfg, tmp_path, seed=0, dtype="bfloat16", log=lambda m: None)
    shards = sorted(d.glob("model-*.safetensors"))
    for shard in shards:
        with safe_open(str(shard), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}  # written in bf16, no fp32 copy
    lm = load_model(str(d), dtype="bfloat16")
    assert len(lm.model.text_decoder.layers) == 1 and lm.model.config.hidden_size == mcfg.hidden_size
    assert len(lm.tokenizer) == mcfg.vocab_size
    for lang in PAPER_LANGS:  # lang_token_id checks the tokenizer against generation_config
        assert lm.lang_token_id(lang) == lm.model.generation_config.text_decoder_lang_to_code_id[lang]
    # cached: a second call reuses the build
    monkeypatch.setattr(rehearse, "write_random_weights", lambda *a, **k: pytest.fail("rebuilt a cached model"))
    assert rehearse.build_model(mcfg, tmp_path, seed=0, dtype="bfloat16") == d


def test_build_is_deterministic_and_keyed_by_seed(tmp_path):
    mcfg = rehearse.model_config(str(TINY), 1)
    a = rehearse.build_model(mcfg, tmp_path / "a", seed=0, log=lambda m: None)
    b = rehearse.build_model(mcfg, tmp_path / "b", seed=0, log=lambda m: None)
    c = rehearse.build_model(mcfg, tmp_path / "c", seed=1, log=lambda m: None)
    assert a.name == b.name != c.name
    files = sorted(p.name for p in a.glob("model-*.safetensors"))
    assert [(a / f).read_bytes() == (b / f).read_bytes() for f in files] == [True] * len(files)
    assert (a / files[0]).read_bytes() != (c / files[0]).read_bytes()


def test_rehearsal_runs_every_stage_and_the_estimate_agrees_with_it(tmp_path):
    """The estimate judged against a measured rehearsal (tiny architecture, 1 layer): peak RAM and
    disk within ±30 % (figures below the floors are not judged). Time and CPU time are measured
    and estimated for every stage but not asserted: speed is judged by the benchmark command
    (`python -m engine rehearse` prints both with their ratio), never by a timed test, since on
    a shared machine both sides of the ratio measure the other processes too."""
    cmd = [sys.executable, "-m", "engine", "rehearse", "--config", str(TINY), "--layers", "1", "--n-per-lang", "2",
           "--out", str(tmp_path)] + [a for s in SMALL for a in ("--set", s)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "STEP_NEURONS_QUIET": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(result["stages"]) == sorted(["data", "speech", "record", "rank", "compare", "steer", "report"])
    for stage, figs in result["stages"].items():
        for name in ("peak_rss_bytes", "disk_bytes", "cpu_s", "time_s"):
            f = figs[name]
            assert f["measured"] is not None and f["estimated"] is not None, (stage, name)
        for name in ("peak_rss_bytes", "disk_bytes"):
            f = figs[name]
            assert f["ok"] is not False, f"{stage} {name}: measured {f['measured']}, estimated {f['estimated']}"
        assert figs["peak_rss_bytes"]["ok"] is True  # RAM is always judged
    assert result["stages"]["speech"]["disk_bytes"]["ok"] is True  # the audio: above the floor
    assert "tts" not in json.dumps(result["settings"]["speech"])  # espeak stands in for XTTS


def test_generation_lengths_are_capped_unless_given(tmp_path):
    # a random model never ends its output: the rehearsal records up to the last step and steers
    # STEER_TOKENS tokens, unless --set says otherwise
    cfg = rehearse.rehearsal_profile("paper", tmp_path, mcfg=rehearse.model_config(), n_per_lang=1)
    assert cfg["record"]["max_new_tokens"] == max(cfg["record"]["steps"]) == 11
    assert cfg["steer"]["max_new_tokens"] == rehearse.STEER_TOKENS
    kept = rehearse.rehearsal_profile("paper", tmp_path, mcfg=rehearse.model_config(), n_per_lang=1,
                                      overrides=["record.max_new_tokens=64", "steer.max_new_tokens=128"])
    assert (kept["record"]["max_new_tokens"], kept["steer"]["max_new_tokens"]) == (64, 128)


def test_a_cpu_that_emulates_bf16_rehearses_in_fp32_and_stores_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr(rehearse, "bf16_slowdown", lambda: 60.0)  # an AVX2 CPU: bf16 emulated
    slow = rehearse.compute_type("bfloat16", "cpu")
    assert slow["dtype"] == "float32" and "emulates bfloat16" in slow["reason"]
    cfg = rehearse.rehearsal_profile("paper", tmp_path, mcfg=rehearse.model_config(), n_per_lang=1, dtype=slow["dtype"])
    assert (cfg["model"]["dtype"], cfg["record"]["store_dtype"]) == ("float32", "bfloat16")  # the paper's store
    monkeypatch.setattr(rehearse, "bf16_slowdown", lambda: 1.3)  # native bf16 (AVX512_BF16, AMX)
    assert rehearse.compute_type("bfloat16", "cpu")["dtype"] == "bfloat16"
    assert rehearse.compute_type("bfloat16", "cpu", "bfloat16")["reason"] == "--dtype bfloat16"  # forced
    assert rehearse.compute_type("bfloat16", "cuda:0")["dtype"] == "bfloat16"  # GPUs are never second-guessed
    kept = rehearse.rehearsal_profile("paper", tmp_path, mcfg=rehearse.model_config(), n_per_lang=1, dtype="bfloat16")
    assert (kept["model"]["dtype"], kept["record"]["store_dtype"]) == ("bfloat16", "auto")


@pytest.mark.parametrize("name", ["qwen2-audio", "voxtral"])
def test_speech_llm_depth_cut_keeps_every_width_of_the_checkpoint(name):
    from engine.model.catalog import config_for

    full, cut = config_for(name), rehearse.model_config(name, 2)
    for part in ("audio_config", "text_config"):
        a, b = getattr(full, part).to_dict(), getattr(cut, part).to_dict()
        changed = {k for k in a if a[k] != b.get(k)}
        assert changed == ({"encoder_layers", "num_hidden_layers"} & set(a) if part == "audio_config"
                           else {"num_hidden_layers", "layer_types"} & set(a))  # depth and its aliases
    assert cut.audio_config.encoder_layers == cut.text_config.num_hidden_layers == 2


def test_a_speech_llm_rehearsal_keeps_the_languages_its_checkpoint_documents(tmp_path):
    from engine.errors import UserError

    mcfg = rehearse.model_config("voxtral")  # no Chinese or Japanese; text width 3072 < the paper's k 4000
    cfg = rehearse.rehearsal_profile("paper", tmp_path, mcfg=mcfg, n_per_lang=2)
    assert cfg["data"]["langs"] == ["deu", "spa", "fra"]
    assert cfg["steer"]["pairs"] == [["deu", "spa"], ["spa", "deu"]]  # every paper pair needs cmn or jpn
    assert max(cfg["rank"]["k_sweep"]) <= mcfg.text_config.hidden_size
    paper = rehearse.rehearsal_profile("paper", tmp_path, mcfg=rehearse.model_config(), n_per_lang=2)
    assert "jpn" in paper["data"]["langs"] and 4000 in paper["rank"]["k_sweep"]  # SeamlessM4T: unchanged
    with pytest.raises(UserError, match="documents fewer than two"):
        rehearse._speech_llm_settings({"data": {"langs": ["deu", "cmn", "jpn"]}}, mcfg, set())


@pytest.mark.parametrize("family", ["qwen2_audio", "voxtral"])
def test_a_speech_llm_rehearsal_model_keeps_its_prompts_and_decodes_every_id(tmp_path, family):
    # the random model's vocabulary is the checkpoint's, wider than the fixture's tokenizer: the
    # built processor pads it, so any id decodes and the audio placeholder still means audio
    from engine.model.lm_recorder import prompt_inputs
    from engine.model.loader import load_model
    from engine.model.recorder import ModelInput

    conf = json.loads((ROOT / "fixtures" / f"tiny_{family}" / "config.json").read_text())
    conf["text_config"]["vocab_size"] += 37
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.json").write_text(json.dumps(conf))
    mcfg = rehearse.model_config(str(tmp_path / "c"), 1)
    lm = load_model(str(rehearse.build_model(mcfg, tmp_path / "m", seed=0, dtype="float32", log=lambda m: None)),
                    dtype="float32")
    vocab = mcfg.text_config.vocab_size
    assert all(isinstance(lm.tokenizer.decode([i]), str) for i in range(vocab))
    wav = 0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(0)).numpy()
    item = ModelInput("s0/deu/S2T", "deu", "speech", "eng", waveform=wav)
    ids = prompt_inputs(lm, [item])["input_ids"][0]
    assert int((ids == lm.model.config.audio_token_id).sum()) > 0 and int(ids.max()) < vocab
    lm.model.generate(**prompt_inputs(lm, [item]), max_new_tokens=2, do_sample=False)  # the prompt runs
