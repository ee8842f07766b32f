"""Throughputs and memory measured at estimate time on this code and this machine.

Each function runs a piece of what a stage runs (matrix products in the model's dtype,
transformers' ``generate`` through the recorder, the recorder on a tiny fixture, streamed
SHA-256, the activation store, exact AP, the bootstrap, the compare statistics, espeak-ng) and
returns seconds per unit of work and, where a stage's memory depends on it, peak extra bytes. A
code change that makes a stage faster or slower therefore shows in the next estimate. CPU seconds
are timed through ``measure.best``, which also accounts the parallelism obtained.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import SeamlessM4Tv2Config, SeamlessM4Tv2Model
from transformers.utils import logging as hf_logging

from engine.files import disk_usage, sha256_file
from engine.model.catalog import build_catalog
from engine.model.lm_recorder import record_batches as record_speech_llm
from engine.model.loader import TINY_MODEL_DIR, load_model, model_class
from engine.model.recorder import ModelInput, greedy
from engine.model.recorder import record_batches as record_seamless
from engine.model.steering import median_activations
from engine.pipeline.inputs.speech import synthesize_sentences
from engine.pipeline.inputs.tts import make_backend
from engine.pipeline.inputs.wav import SAMPLE_RATE, load_waveform
from engine.pipeline.stages.compare import bootstrap_ap
from engine.pipeline.store import COLS_PER_CHUNK, MatrixStore
from engine.science.crossmodal import replicate_statistics
from engine.science.intervals import half_sample_splits
from engine.science.ranking import average_precision, on_device
from engine.tools.estimate.assumptions import ASSUMED_ESPEAK
from engine.tools.estimate.measure import account, best, in_fresh_process, restart_accounting
from engine.tools.estimate.shape import Plan
from engine.usage import cpu_seconds, peak_above_now

#: Seconds one timed matrix product may take while calibrating. On a CPU that emulates bfloat16
#: (AVX2 without AVX512_BF16 or AMX) a bf16 product is ~50-100x slower than fp32; rows and
#: repeats shrink until each product fits, so calibration costs seconds on any CPU.
MATMUL_CALL_BUDGET_S = 0.25
#: rows x resamples x columns of the bootstrap calibration (about a second here), whatever the run's size
BOOTSTRAP_CALIBRATION_VALUES = 4e8


def measure_all(plan: Plan) -> dict:
    """Every calibration of ``plan`` that does not depend on its inputs' lengths, in the order an
    estimate has always run them: ``matmul_s_per_mac`` and ``generate`` (left out when a stated
    GPU replaces them, ``Plan.gpu_assumed``), ``sha256_s_per_byte``, ``store``, ``rank``,
    ``bootstrap``, ``statistics``, and ``espeak`` (None unless the run synthesises with espeak-ng
    sentences known offline, or espeak-ng is absent)."""
    p = plan
    cal: dict = {}
    if not p.gpu_assumed:  # a CUDA run with no GPU visible uses the stated GPU model instead
        cal["matmul_s_per_mac"] = matmul(p.mm_device, p.tdtype, min(p.shape["d_model"], 4096), p.decode_batches or {1})
        cal["generate"] = generate(min(p.bs, max(p.n_id, p.n_steer)))
    cal["sha256_s_per_byte"] = sha256()
    cal["store"] = store(min(p.rpb, max(p.n_id, 1)), 8192, p.sdtype)
    cal["rank"] = rank(p.n_id, p.L, min(8192, p.n_dec), p.rank_device)
    # one store block (its memory is the stage's working set); fewer columns when rows x resamples
    # make that slow (cost and memory are linear in columns)
    boot_cols = min(COLS_PER_CHUNK, p.n_dec,
                    max(16, int(BOOTSTRAP_CALIBRATION_VALUES // max(1, p.n_id * max(p.n_boot, 1)))))
    cal["bootstrap"] = bootstrap(p.cfg["data"]["n_identify"], p.langs, boot_cols, max(1, p.n_boot), p.rank_device,
                                 mem_cols=min(2 * COLS_PER_CHUNK, p.n_dec))
    widths = (min(2048, p.n_dec), min(32768, p.n_dec))
    if widths[0] == widths[1]:
        widths = (max(1, widths[1] // 4), widths[1])
    cal["statistics"] = statistics(p.L, widths, p.k, p.ks)
    sel = p.sel
    cal["espeak"] = espeak(sel.sentences if sel else None, p.langs) if p.backend == "espeak" and sel else None
    return cal


def preflight(mcfg, modules: str = "paper_table") -> tuple:
    """``(model, catalog, seconds)``: the model of ``mcfg`` built on the meta device, its neuron
    catalog, and the CPU seconds every stage's process spends on that preflight (loading the
    config, building the catalog on meta). Starts the accounting of ``measure.parallelism``."""
    # transformers imports a model class on first use; a stage process has imported SeamlessM4T
    # v2 before its preflight (measure._STAGE_IMPORTS), and so has this module, at its top
    restart_accounting()
    c0, t0 = cpu_seconds(), time.perf_counter()
    with torch.device("meta"):
        model = model_class(mcfg)(mcfg)
    cat = build_catalog(model, modules=modules)  # definitions.modules: the paper's table or the authors' set
    # every stage's process loads the config and builds the catalog on meta once (preflight)
    seconds = 2 * (cpu_seconds() - c0)
    account(cpu_seconds() - c0, time.perf_counter() - t0)
    return model, cat, seconds


def matmul(device: str, dtype, d: int, batches) -> dict:
    """Seconds per multiply-accumulate of a weight matrix [16384, d] applied to B rows for every
    decoding batch size B in ``batches`` (one token per sequence: reading the weights dominates,
    so the cost per MAC falls almost as 1/B) and to up to 2048 rows (encoding, teacher forcing;
    compute-bound, so fewer rows give the same cost per MAC once a product would exceed
    ``MATMUL_CALL_BUDGET_S``). Returns ``{"encode": s, "decode": {B: s}}``."""
    # nn.Linear's layout [out, in] through F.linear, as every projection of the model runs: the
    # same product as x @ w.T, but bf16 kernels (oneDNN) can be twice as fast in this layout
    w = torch.randn(16 * 1024 if d >= 512 else 4 * d, d, dtype=dtype, device=device)  # > cache when d is real

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def once(x) -> float:
        t0 = time.perf_counter()
        F.linear(x, w)
        sync()
        return time.perf_counter() - t0

    def per_mac(rows: int) -> float:
        x = torch.randn(rows, d, dtype=dtype, device=device)
        first = once(x)  # warm-up, and how long one product takes here
        inner = max(1, min(4, int(MATMUL_CALL_BUDGET_S / max(first, 1e-9))))

        def run():
            for _ in range(inner):
                F.linear(x, w)
            sync()
        repeat = 3 if first * inner < MATMUL_CALL_BUDGET_S else 1
        return best(run, repeat, wall_clock=device.startswith("cuda")) / (inner * rows * w.numel())

    probe = per_mac(16)
    enc_rows = 2048
    while enc_rows > 16 and probe * enc_rows * w.numel() > MATMUL_CALL_BUDGET_S:
        enc_rows //= 2
    return {"encode": min(probe, per_mac(enc_rows)) if enc_rows > 16 else probe,
            "decode": {int(b): per_mac(int(b)) for b in sorted(set(batches))}}


def _tiny_decoder(layers: int):
    """A SeamlessM4T v2 of hidden size 32 with ``layers`` decoder layers that never emits its
    end token, so every requested step is paid."""
    cfg = SeamlessM4Tv2Config(vocab_size=64, hidden_size=32, decoder_layers=layers, encoder_layers=1,
                              speech_encoder_layers=1, decoder_ffn_dim=32, encoder_ffn_dim=32,
                              speech_encoder_intermediate_size=32, t2u_encoder_layers=1, t2u_decoder_layers=1,
                              decoder_attention_heads=2, encoder_attention_heads=2, speech_encoder_attention_heads=2,
                              t2u_vocab_size=16, char_vocab_size=16, unit_hifi_gan_vocab_size=8,
                              max_position_embeddings=256)
    torch.manual_seed(0)
    model = SeamlessM4Tv2Model(cfg).eval()
    with torch.no_grad():
        model.shared.weight[cfg.eos_token_id] = -1.0  # never end early: every step is paid
    model.generation_config.decoder_start_token_id = cfg.decoder_start_token_id
    model.generation_config.eos_token_id = cfg.eos_token_id
    model.generation_config.pad_token_id = cfg.pad_token_id
    return model


def generate(batch: int) -> dict:
    """Framework cost of greedy decoding through the recorder's ``generate`` call: seconds per
    step with no compute to speak of (hidden size 32), split into a fixed part and a part per
    decoder layer (two models, 1 and 4 layers). Returns ``{"step_s": s, "layer_s": s}``."""
    hf_logging.set_verbosity_error()
    steps = 24
    per_step = {}
    for layers in (1, 4):
        model = _tiny_decoder(layers)

        class _LM:  # the two attributes greedy reads
            pass
        lm = _LM()
        lm.model, lm.device = model, torch.device("cpu")
        states = torch.randn(batch, 8, 32)
        mask = torch.ones(batch, 8, dtype=torch.long)

        def run(n):
            with torch.no_grad():
                greedy(lm, states, mask, [4] * batch, n)
        run(2)
        per_step[layers] = (best(lambda: run(steps), 2) - best(lambda: run(1), 2)) / (steps - 1)
    layer = max(0.0, (per_step[4] - per_step[1]) / 3)
    return {"step_s": max(1e-5, per_step[1] - layer), "layer_s": layer}


def recorder(batch: int, audio_s: float, fixture: Path | None = None) -> dict:
    """The recorder's own costs apart from the model's arithmetic, measured by recording one
    speech and one text batch of ``batch`` examples with a tiny fixture model of the run's
    architecture (``fixture``; default the tiny SeamlessM4T, hidden size 96, so its arithmetic
    is negligible): CPU seconds per batch (features, prompts, hooks, teacher-forced pass,
    copies) and per greedy step, and the CPU seconds of loading a model directory. Returns
    ``{"load_s", "speech_batch_s", "speech_step_s", "text_batch_s", "text_step_s"}``."""
    hf_logging.set_verbosity_error()
    t0 = cpu_seconds()
    lm = load_model(fixture or TINY_MODEL_DIR, device="cpu", dtype="float32")
    record_batches = record_speech_llm if getattr(lm, "decoder_only", False) else record_seamless
    load = cpu_seconds() - t0
    cat = build_catalog(lm.model)
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(int(16000 * max(audio_s, 0.5)))).astype(np.float32)
    inputs = {"speech": [ModelInput(f"s{i}/deu/S2T", "deu", "speech", "eng", waveform=wav) for i in range(batch)],
              "text": [ModelInput(f"s{i}/deu/T2T", "deu", "text", "eng", text="Das Wetter ist heute schön.")
                       for i in range(batch)]}
    out = {"load_s": load}
    for modality, items in inputs.items():
        def run(n_new):
            list(record_batches(lm, cat, items, steps=(1, 6, 11), batch_size=batch, max_new_tokens=n_new))
        short, long = best(lambda: run(11), 2), best(lambda: run(27), 2)
        step = max(0.0, (long - short) / 16)
        out[f"{modality}_batch_s"] = max(0.0, short - 11 * step)
        out[f"{modality}_step_s"] = step
    return out


def sha256(n_bytes: int = 32 * 2**20) -> float:
    """CPU seconds per byte of streamed SHA-256 (``engine.files.sha256_file``, as the record stage
    hashes the weights) over a file of ``n_bytes`` random bytes."""
    with tempfile.NamedTemporaryFile() as fh:
        fh.write(os.urandom(n_bytes))
        fh.flush()
        return best(lambda: sha256_file(fh.name), 2) / n_bytes


def store(rows: int, cols: int, dtype: str) -> dict:
    """Seconds per stored value of the activation store's block write and column-block read,
    and its compressed bytes per value, on random values (activations compress no better in
    general). Returns ``{"write_s_per_value", "read_s_per_value", "stored_bytes_per_value"}``."""
    rng = np.random.default_rng(0)
    block = rng.standard_normal((rows, cols)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        matrix = MatrixStore.create(Path(tmp) / "m", rows, cols, rows_per_block=rows, dtype=dtype)
        t0 = cpu_seconds()
        matrix.write_block(0, block, {"example_ids": []})
        write = cpu_seconds() - t0
        read = best(lambda: [b for _, b in matrix.iter_col_blocks()], 2)
        size = disk_usage(Path(tmp) / "m")
    n = rows * cols
    return {"write_s_per_value": write / n, "read_s_per_value": read / n,
            "stored_bytes_per_value": size / n}


def rank(rows: int, n_labels: int, cols: int, device: str) -> dict:
    """What the rank stage does to one store chunk [rows, cols] (fp16): exact AP with its
    tie-breaker r (engine.science.ranking.average_precision) -> ``s_per_neuron`` and the chunk's
    peak extra memory ``chunk_extra_bytes``; and the ASR decoder's per-language medians ->
    ``medians_s_per_neuron``."""
    rng = np.random.default_rng(0)
    block = rng.standard_normal((rows, cols)).astype(np.float16)
    labels = np.arange(rows) % n_labels
    langs = [str(v) for v in labels]

    def ap():
        average_precision(on_device(block, device), labels, n_labels=n_labels, return_separation=True)

    # memory from the first call, as a stage process pays it (compiled kernels load then; after
    # a warm-up, freed heap would hide part of the peak); time from a second one
    _, extra = peak_above_now(ap)
    seconds = best(ap, 1)
    m_cols = min(cols, max(16, int(4e6 // max(rows, 1))))  # linear in columns: a slice will do
    part = block[:, :m_cols].astype(np.float32)
    # and in languages (each one's medians of its rows and of all the others): a few will do
    some = sorted(set(langs))[:5]
    medians = best(lambda: [median_activations(part, langs, lang, chunk_cols=m_cols) for lang in some], 2)
    medians *= n_labels / len(some)
    return {"s_per_neuron": seconds / cols, "chunk_extra_bytes": extra + block.nbytes,
            "medians_s_per_neuron": medians / m_cols}


def bootstrap(rows_per_lang: int, langs: list[str], cols: int, n_boot: int, device: str,
              *, mem_cols: int | None = None, fresh_process: bool = True) -> dict:
    """The compare stage's bootstrap (engine.pipeline.stages.compare.bootstrap_ap) on a store of the run's rows
    with the run's number of resamples (one sort per neuron serves them all, so fewer resamples
    would overstate the cost of each): seconds per (resample, neuron) on ``cols`` columns
    (``s_per_resample_neuron``), and the peak extra memory of a store of ``mem_cols`` columns
    (``block_extra_bytes``; two store blocks: the second shows what the first leaves behind),
    measured in a fresh interpreter (in this process, heap left by earlier calibrations would
    hide part of it). With ``fresh_process`` False (the child's side) only ``block_extra_bytes``
    of ``cols`` columns, measured here."""
    L = len(langs)
    n = rows_per_lang * L
    ids = [f"s{i // L}/{langs[i % L]}/S2T" for i in range(n)]
    meta = {"example_ids": ids, "langs": [langs[i % L] for i in range(n)], "valid": {"1": [True] * n}}
    splits = half_sample_splits([i.split("/")[0] for i in ids], n_boot, 0)
    block = np.random.default_rng(0).standard_normal((n, cols)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        matrix = MatrixStore.create(Path(tmp) / "m", n, cols, rows_per_block=max(n, 1), dtype="float16")
        matrix.write_block(0, block, {"example_ids": ids})
        run = lambda: bootstrap_ap(matrix, meta, "1", splits, langs, Path(tmp) / "b.npy", device)  # noqa: E731
        if not fresh_process:  # the child's side: report the peak of the first call, nothing else
            return {"block_extra_bytes": peak_above_now(run)[1]}

        def child(c: int) -> int:
            return in_fresh_process(f"from engine.tools.estimate.calibrate import bootstrap\n"
                                    f"print(bootstrap({rows_per_lang}, {list(langs)!r}, {c}, "
                                    f"{n_boot}, {device!r}, fresh_process=False)['block_extra_bytes'])")

        want = mem_cols or cols
        if n * n_boot * want <= 25 * BOOTSTRAP_CALIBRATION_VALUES:
            extra = child(want)
        else:  # the full width would take hours (89 languages x 1,000 sentences): a line
            # through two narrow widths (fixed part: the resamples' weights; the rest per column)
            e1, e2 = child(cols), child(2 * cols)
            extra = -1 if min(e1, e2) < 0 else int(e1 + max(0, e2 - e1) * (want - cols) / cols)
        if extra < 0:  # no child could run it: this process's figure, a lower bound
            extra = peak_above_now(run)[1]
        run()  # warm-up: the compiled kernels load once per process
        seconds = best(run, 1)
    return {"s_per_resample_neuron": seconds / (n_boot * cols), "block_extra_bytes": extra}


def statistics_step_bytes(L: int, n: int, k: int, ks: list[int]) -> int:
    """Peak extra bytes of one compare step's statistics at width n, as the stage holds them:
    the point AP and r of both sides, one resample's (float64 [L, n] each), and
    ``replicate_statistics`` working on them. Run in a fresh interpreter (``in_fresh_process``)."""
    def step():
        rng = np.random.default_rng(0)
        held = [rng.random((L, n)) for _ in range(8)]
        replicate_statistics(*held[4:], min(k, n), [min(v, n) for v in ks])
    return peak_above_now(step)[1]


def statistics(L: int, widths: tuple[int, int], k: int, ks: list[int]) -> dict:
    """What the compare stage computes per half-sample (``crossmodal.replicate_statistics``: the whole
    k sweep from one ordering, the permutation test at k, Spearman) on random AP and tie-breaker
    matrices [L, N] at two widths: fixed seconds + seconds per neuron; and the step's memory per
    neuron (``statistics_step_bytes`` at the wider width, in a fresh interpreter). Returns
    ``{"resample": {"fixed_s", "s_per_neuron", "bytes_per_neuron"}}``."""
    rng = np.random.default_rng(0)
    t = []
    for n in widths:
        a, b, sa, sb = (rng.random((L, n)) for _ in range(4))
        kk = [min(v, n) for v in ks]
        t.append(best(lambda: replicate_statistics(a, b, sa, sb, min(k, n), kk), 2))
    per = max(0.0, (t[1] - t[0]) / (widths[1] - widths[0]))
    step_bytes = in_fresh_process(f"from engine.tools.estimate.calibrate import statistics_step_bytes\n"
                                  f"print(statistics_step_bytes({L}, {widths[1]}, {k}, {list(ks)!r}))")
    if step_bytes < 0:  # no child could run it: this process's figure, a lower bound
        step_bytes = statistics_step_bytes(L, widths[1], k, list(ks))
    return {"resample": {"fixed_s": max(0.0, t[0] - per * widths[0]), "s_per_neuron": per,
                         "bytes_per_neuron": step_bytes / widths[1]}}


def espeak(sentences, langs) -> dict | None:
    """espeak-ng through the speech stage's own path (``synthesize_sentences`` into a fresh cache):
    CPU seconds per utterance (``s_per_utterance``), audio seconds per character of each
    language's input text (``audio_s_per_char``, one sentence per language) and the ``backend``;
    None if espeak-ng is absent."""
    if shutil.which("espeak-ng") is None:
        return None
    backend = make_backend("espeak")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = cpu_seconds()
        result = synthesize_sentences(sentences[:1], langs, backend, Path(tmp))
        seconds = (cpu_seconds() - t0) / max(1, len(langs))
        per_char = {}
        for (sid, lang), path in result.paths.items():
            text = backend.input_text(sentences[0], lang)
            per_char[lang] = len(load_waveform(path)) / SAMPLE_RATE / max(1, len(text))
    for lang in langs:
        per_char.setdefault(lang, float(np.mean(list(per_char.values()))) if per_char else ASSUMED_ESPEAK["audio_s_per_char"])
    return {"s_per_utterance": seconds, "audio_s_per_char": per_char, "backend": backend}
