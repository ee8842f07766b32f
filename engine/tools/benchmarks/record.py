"""``python -m engine bench record``: cost of recording every catalog neuron vs plain greedy generation.

A randomly initialised SeamlessM4T v2 with the real widths (hidden 1024, text FFN 8192, speech
FFN 4096, 16 heads) and 2 layers per stack; the text-to-unit model and vocoder are shrunk
(never run here) and the vocabulary is 10,000 (the real 256,102-row lm_head would make plain
generation slower and the ratio look better than it is). Inputs are the tiny fixture's tokenizer
and feature extractor on embedded-corpus sentences (text) and synthetic waveforms (speech).

Baseline: transformers' greedy ``generate`` (encoder + KV-cache decoding) to step max(steps),
i.e. max(steps) new tokens after the language tag, same inputs and batches. Recording:
``record_batches`` with all catalog neurons at the requested steps. Each is timed ``repeats``
times, interleaved, after one warm-up; the figure is the ratio of medians. The last line printed
is one JSON object.
"""
from __future__ import annotations

import json
import statistics
import time

import numpy as np
import torch

from engine.model.catalog import build_catalog
from engine.model.loader import TINY_MODEL_DIR, LoadedModel, load_model, parse_dtype
from engine.model.recorder import ModelInput, encode_inputs, modality_batches, record_batches
from engine.pipeline.inputs.corpus import embedded_corpus
from engine.usage import peak_rss_bytes

BENCH_VOCAB = 10_000


def bench_config(n_layers: int = 2):
    from transformers import SeamlessM4Tv2Config

    return SeamlessM4Tv2Config(
        vocab_size=BENCH_VOCAB, encoder_layers=n_layers, decoder_layers=n_layers, speech_encoder_layers=n_layers,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, adaptor_dropout=0.0,
        encoder_layerdrop=0.0, decoder_layerdrop=0.0, speech_encoder_layerdrop=0.0,
        t2u_vocab_size=24, char_vocab_size=64, t2u_encoder_layers=1, t2u_encoder_ffn_dim=32,
        t2u_encoder_attention_heads=2, t2u_decoder_layers=1, t2u_decoder_ffn_dim=32, t2u_decoder_attention_heads=2,
        t2u_max_position_embeddings=64, t2u_variance_predictor_embed_dim=1024, t2u_variance_predictor_hidden_dim=16,
        upsample_initial_channel=16, upsample_rates=[5, 4], upsample_kernel_sizes=[11, 8], unit_hifi_gan_vocab_size=16,
        unit_embed_dim=16, lang_embed_dim=8, spkr_embed_dim=8, vocoder_num_langs=6, vocoder_num_spkrs=2,
        resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
    )


def bench_model(device: str, dtype, n_layers: int):
    """LoadedModel around a random real-width model, with the tiny fixture's preprocessing."""
    from transformers import SeamlessM4Tv2Model

    tiny = load_model(str(TINY_MODEL_DIR))
    torch.manual_seed(0)
    model = SeamlessM4Tv2Model(bench_config(n_layers)).eval()
    with torch.no_grad():  # keep greedy outputs running to the last step, as in the fixture
        for special in (0, 1, 2, 3):
            model.shared.weight[special] *= 0.02
    model.generation_config = tiny.model.generation_config
    dev = torch.device(device)
    dt = parse_dtype(dtype, dev)
    model.to(dev, dt)
    return LoadedModel(model=model, tokenizer=tiny.tokenizer, feature_extractor=tiny.feature_extractor,
                       model_id="random-real-width", revision=None, device=dev, dtype=dt)


def bench_inputs(n: int, modality: str):
    langs = ("deu", "spa", "fra", "cmn", "jpn")
    if modality == "text":
        sents = embedded_corpus()
        return [ModelInput(f"b{i}", langs[i % 5], "text", "eng", text=sents[i // 5 % len(sents)].texts[langs[i % 5]])
                for i in range(n)]
    rng = np.random.default_rng(0)
    return [ModelInput(f"b{i}", langs[i % 5], "speech", langs[i % 5],
                       waveform=(0.1 * rng.standard_normal(int(rng.integers(32000, 64000)))).astype(np.float32))
            for i in range(n)]


@torch.no_grad()
def plain_generate(lm, inputs, batch_size: int, n_new: int) -> int:
    """transformers' greedy generate (encoder + KV-cache decoding); returns tokens generated."""
    from transformers import GenerationMixin

    model, total = lm.model, 0
    for batch in modality_batches(inputs, batch_size):
        enc, _, _ = encode_inputs(lm, batch)
        model.set_modality(batch[0].modality)
        tags = torch.tensor([[lm.lang_token_id(x.tgt_lang)] for x in batch], device=lm.device)
        out = GenerationMixin.generate(model, **enc, decoder_input_ids=tags, max_new_tokens=n_new,
                                       do_sample=False, num_beams=1)
        total += int(out.numel())
    return total


def main(args) -> int:
    device = getattr(args, "device", None) or "cpu"
    dtype = getattr(args, "dtype", None)
    batch_size = int(getattr(args, "batch_size", None) or 8)
    n_examples = int(getattr(args, "examples", None) or 16)
    steps = tuple(getattr(args, "steps", None) or (1, 6, 11))
    n_layers = int(getattr(args, "layers", None) or 2)
    repeats = int(getattr(args, "repeats", None) or 3)
    lm = bench_model(device, dtype, n_layers)
    catalog = build_catalog(lm.model)
    n_new = max(steps)
    figures = {}
    for modality in ("text", "speech"):
        inputs = bench_inputs(n_examples, modality)
        base, rec = [], []
        n_valid = 0
        for r in range(repeats + 1):  # first round is warm-up
            t0 = time.perf_counter()
            plain_generate(lm, inputs, batch_size, n_new)
            t1 = time.perf_counter()
            records = list(record_batches(lm, catalog, inputs, steps=steps, batch_size=batch_size))
            t2 = time.perf_counter()
            if r:
                base.append(t1 - t0)
                rec.append(t2 - t1)
            n_valid = int(sum(rec_.valid[max(steps)].sum() for rec_ in records))
            del records
        figures[modality] = {"generate_s": statistics.median(base), "record_s": statistics.median(rec),
                             "overhead": statistics.median(rec) / statistics.median(base),
                             "valid_at_last_step": n_valid}
    overall = (sum(f["record_s"] for f in figures.values()) / sum(f["generate_s"] for f in figures.values()))
    summary = {
        "overhead_vs_generate": round(overall, 3),
        "overhead_text": round(figures["text"]["overhead"], 3),
        "overhead_speech": round(figures["speech"]["overhead"], 3),
        "generate_s": {m: round(f["generate_s"], 3) for m, f in figures.items()},
        "record_s": {m: round(f["record_s"], 3) for m, f in figures.items()},
        "valid_at_last_step": {m: f["valid_at_last_step"] for m, f in figures.items()},
        "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
        "neurons": catalog.total, "examples": n_examples, "batch_size": batch_size, "steps": list(steps),
        "layers_per_stack": n_layers, "hidden": lm.model.config.hidden_size, "vocab": BENCH_VOCAB,
        "device": str(lm.device), "dtype": str(lm.dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(), "repeats": repeats,
    }
    print(json.dumps(summary))
    return 0
