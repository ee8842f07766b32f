"""Loader: the tiny fixture loads offline through the real path; failures are one clear UserError."""
import pytest
import torch

from engine.errors import UserError
from engine.model.loader import load_model, parse_dtype

LANGS = ("eng", "deu", "spa", "fra", "cmn", "jpn")


def test_tiny_model_loads_offline_for_all_tasks(tiny_lm):
    from transformers import SeamlessM4Tv2Model

    assert isinstance(tiny_lm.model, SeamlessM4Tv2Model) and not tiny_lm.model.training
    assert tiny_lm.dtype == torch.float32 and tiny_lm.device.type == "cpu"
    table = tiny_lm.model.generation_config.text_decoder_lang_to_code_id
    ids = [tiny_lm.lang_token_id(lang) for lang in LANGS]
    assert ids == [table[lang] for lang in LANGS] and len(set(ids)) == 6
    assert tiny_lm.lang_token_id("__deu__") == tiny_lm.lang_token_id("deu")
    assert tiny_lm.feature_extractor.sampling_rate == 16000
    assert tiny_lm.model.config.feature_projection_input_dim == 160


def test_tokenizer_prepends_language_and_never_emits_unk(tiny_lm):
    ids = tiny_lm.tokenizer("Zürich 東京 𝄞 ŋ", src_lang="jpn")["input_ids"]
    assert ids[0] == tiny_lm.lang_token_id("jpn") and ids[-1] == tiny_lm.tokenizer.eos_token_id
    assert tiny_lm.tokenizer.unk_token_id not in ids  # byte fallback restored by the loader
    assert tiny_lm.tokenizer.decode(ids, skip_special_tokens=True) == "Zürich 東京 𝄞 ŋ"


def test_unknown_language_is_a_user_error(tiny_lm):
    with pytest.raises(UserError, match="xyz"):
        tiny_lm.lang_token_id("xyz")


def test_missing_directory_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist") as err:
        load_model(str(tmp_path / "nope"))
    assert "nope" in str(err.value)


def test_unreachable_hub_id_names_id_what_was_tried_and_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(UserError) as err:
        load_model("no-such-org/no-such-model")
    msg = str(err.value)
    assert "no-such-org/no-such-model" in msg and "tried" in msg and "download" in msg
    assert err.value.__cause__ is None and "\n" not in msg


def test_empty_directory_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="cannot load model"):
        load_model(str(tmp_path))


def test_dtype_options():
    cpu = torch.device("cpu")
    assert parse_dtype(None, cpu) == torch.float32
    assert parse_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(UserError):
        parse_dtype("int3", cpu)
