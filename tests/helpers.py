"""Helpers shared by the tests: the tolerance of oracle comparisons, and the tiny speech LLMs.

``assert_close_to_oracle``: the tolerance of a comparison between two computations of the same
mathematics in one floating-point type that differ only in summation order (KV-cache decoding
against one teacher-forced pass, a batch against each example alone, one CPU's kernels against
another's). Such results differ by a few units of the type's precision *relative to the
magnitude of what was summed*: ``|a - b| <= ULPS * eps(dtype) * scale``, where ``scale`` is the
largest magnitude in each compared group (a component's columns, where groups are given). A
value near zero inside a component whose values are ~1 carries the rounding of sums of ~1. A
real defect (wrong position, padding leaking in, a wrong step) moves values by a sizeable
fraction of that scale, ~1e4 times the bound.

``speech_llm(name, shape)``: a tiny speech LLM of each family, built once per process.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch

from engine.model.loader import LoadedModel, LoadedSpeechLLM, load_model

REPO = Path(__file__).resolve().parent.parent
#: Rounding budget in units of eps(dtype) x group scale. Summation-order differences through the
#: tiny model's stacks measure up to ~20 units (AVX2 against AVX-512 kernels, KV cache against
#: teacher forcing); 256 leaves a margin of 10 over that and is still 1e-4 of the scale in fp16.
ULPS = 256


def oracle_tolerance(expected, dtype=np.float32, groups=None) -> np.ndarray:
    """Per-element bound ``ULPS * eps(dtype) * scale``; ``scale`` = max |expected| over all
    leading axes and, per column group (a list of slices of the last axis), over the group."""
    e = np.abs(np.asarray(expected, dtype=np.float64))
    e2 = e.reshape(-1, e.shape[-1]) if e.ndim > 1 else e.reshape(1, -1)
    col_max = e2.max(axis=0)
    scale = np.empty_like(col_max)
    for sl in groups or [slice(None)]:
        scale[sl] = col_max[sl].max() if col_max[sl].size else 0.0
    return ULPS * float(np.finfo(dtype).eps) * scale


def assert_close_to_oracle(actual, expected, dtype=np.float32, groups=None, what: str = "") -> None:
    """``actual`` equals ``expected`` up to ``oracle_tolerance`` (see the module docstring); NaN
    (an excluded row) must stand exactly where the oracle has NaN."""
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, (what, a.shape, e.shape)
    nan = np.isnan(e)
    assert np.array_equal(np.isnan(a), nan), f"{what}: NaN where the oracle has none, or the reverse"
    a, e = np.where(nan, 0.0, a), np.where(nan, 0.0, e)
    tol = oracle_tolerance(e, dtype, groups)
    excess = np.abs(a - e) - tol
    worst = np.unravel_index(int(np.argmax(excess)), excess.shape) if excess.size else ()
    assert not (excess > 0).any(), (
        f"{what}: {(excess > 0).sum()} of {excess.size} values beyond {ULPS} eps x scale; worst at {worst}: "
        f"{a[worst]!r} vs {e[worst]!r} (|diff| {abs(a[worst] - e[worst]):.3g}, bound {tol[worst[-1]]:.3g})")


def component_groups(catalog, group: str) -> list[slice]:
    """One slice per component of ``group`` in its recorded matrix (the catalog's column order)."""
    comps = catalog.group(group)
    base = comps[0].offset
    return [slice(c.offset - base, c.offset - base + c.dim) for c in comps]


#: the second, differently shaped config per speech-LLM family (its text part; the audio part is
#: the fixture's): Qwen2-Audio without grouped-query attention and with three layers; Voxtral
#: with a head_dim that is not hidden / heads (q_proj wider than the hidden state) and one kv head
OTHER_SHAPES = {"qwen2_audio": dict(hidden_size=24, num_attention_heads=3, num_key_value_heads=3,
                                    intermediate_size=40, num_hidden_layers=3),
                "voxtral": dict(head_dim=12, num_key_value_heads=1, intermediate_size=40, num_hidden_layers=3)}


@functools.lru_cache(maxsize=None)
def speech_llm(name: str, shape: str = "fixture"):
    """A tiny speech LLM (engine.model.loader.LoadedSpeechLLM): ``shape="fixture"`` loads the saved
    fixtures/tiny_<name> through ``load_model``; ``"other"`` is a seeded random model of the same
    family and processor in the shape of ``OTHER_SHAPES``, built here."""
    directory = REPO / "fixtures" / f"tiny_{name}"
    lm = load_model(str(directory))
    if shape == "fixture":
        return lm
    spec = importlib.util.spec_from_file_location("build_tiny_speech_llms", REPO / "fixtures" / "build_tiny_speech_llms.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    model = builder.tiny_model(name, lm.processor, **OTHER_SHAPES[name])
    return LoadedSpeechLLM(model=model, processor=lm.processor, model_id=f"{directory} ({shape})", revision=None,
                           device=lm.device, dtype=lm.dtype, instructions=lm.instructions)


def second_model(tiny_lm):
    """A random-weight SeamlessM4Tv2 of another shape: adapter kernel 6 > stride 3 (so the
    sub-sampled length exceeds the conv's output width), two adapter layers, small attention
    chunks, other widths and depths; the tiny fixture's tokenizer and feature extractor."""
    from transformers import SeamlessM4Tv2Config, SeamlessM4Tv2Model

    base = tiny_lm.model.config
    config = SeamlessM4Tv2Config(
        vocab_size=base.vocab_size, t2u_vocab_size=base.t2u_vocab_size, char_vocab_size=base.char_vocab_size,
        pad_token_id=base.pad_token_id, bos_token_id=base.bos_token_id, eos_token_id=base.eos_token_id,
        decoder_start_token_id=base.decoder_start_token_id, hidden_size=48, encoder_layers=1, decoder_layers=3,
        encoder_attention_heads=3, decoder_attention_heads=6, encoder_ffn_dim=80, decoder_ffn_dim=112,
        speech_encoder_layers=3, speech_encoder_attention_heads=6, speech_encoder_intermediate_size=72,
        feature_projection_input_dim=base.feature_projection_input_dim, conv_depthwise_kernel_size=5,
        adaptor_kernel_size=6, adaptor_stride=3, num_adapter_layers=2, speech_encoder_chunk_size=9,
        speech_encoder_left_chunk_num=1, left_max_position_embeddings=16, right_max_position_embeddings=4,
        max_position_embeddings=256, t2u_encoder_layers=1, t2u_decoder_layers=1, t2u_encoder_ffn_dim=16,
        t2u_decoder_ffn_dim=16, t2u_encoder_attention_heads=2, t2u_decoder_attention_heads=2,
        t2u_max_position_embeddings=32, t2u_variance_predictor_embed_dim=16, t2u_variance_predictor_hidden_dim=8,
        unit_embed_dim=8, unit_hifi_gan_vocab_size=8, upsample_initial_channel=8, upsample_rates=[5, 4],
        upsample_kernel_sizes=[11, 8], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        spkr_embed_dim=4, lang_embed_dim=4, vocoder_num_langs=6, vocoder_num_spkrs=2, initializer_range=0.2,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, speech_encoder_dropout=0.0,
        adaptor_dropout=0.0, attn_implementation="sdpa",
    )
    torch.manual_seed(20240514)
    model = SeamlessM4Tv2Model(config).eval()
    model.generation_config = tiny_lm.model.generation_config
    return LoadedModel(model=model, tokenizer=tiny_lm.tokenizer, feature_extractor=tiny_lm.feature_extractor,
                       model_id="random-second-config", revision=None, device=torch.device("cpu"),
                       dtype=torch.float32)
