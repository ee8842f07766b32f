"""What a run will need, per stage, computed before anything runs.

Sizes come from the neuron catalog and the model's parameter counts (the model is built on the
meta device, so Large needs no weights and no network). Costs come from throughputs *measured
at estimate time on this code and this machine* (``calibrate``): matrix products in the model's
dtype at decoding and at encoding batch shapes, the framework's per-step cost of transformers'
greedy ``generate`` through the recorder, streamed SHA-256, the activation store's write and read
path, exact AP and the bootstrap on store blocks of the run's row count, the compare statistics
per bootstrap resample at two widths, espeak-ng synthesis, and the resident size of a stage
process. A code change that makes a stage faster or slower therefore shows in the next
estimate.

Per stage the estimate gives ``time_s`` (inside the stage's process, start-up imports excluded),
``peak_rss_bytes``, ``gpu_peak_bytes`` (CUDA devices) and ``disk_bytes`` (what the stage leaves
under the output root). ``python -m engine rehearse`` measures the same figures on a random-weight
model of the real architecture; its test holds RAM and disk within ±30 % and time within a factor
of 2 on CPU. Assumptions that cannot be measured here (GPU throughput when no GPU is visible,
XTTS speed, FLEURS durations) are stated in ``assumptions`` and in the printed lines.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.pipeline import config as config_mod
from engine.usage import cpu_seconds, peak_above_now, rss_bytes

#: The stated GPU model, used when the run's device is CUDA but no GPU is visible here (nothing is
#: measured on the CPU for it): an A100-class card in bf16. ``tflops``: sustained dense bf16
#: throughput (the A100's peak is 312); ``weight_read_gbps``: bandwidth at which a greedy decoding
#: step reads every weight once for its whole batch (the A100's is 1,555-2,039 GB/s); the
#: per-step framework overhead of transformers' ``generate`` (kernel launches, small batches):
#: ``step_overhead_s`` per step plus ``layer_overhead_s`` per decoder layer and step;
#: ``ap_speedup``: exact AP (torch.sort) on the GPU against this CPU's compiled kernels. Printed
#: with every estimate that uses it.
ASSUMED_GPU = {"tflops": 200.0, "weight_read_gbps": 1500.0, "step_overhead_s": 0.004, "layer_overhead_s": 0.0006,
               "ap_speedup": 20.0}
#: Seconds to synthesise one utterance with XTTS v2 on a GPU (not installed here to measure).
ASSUMED_TTS_S = {"xtts": 1.0, "natural": 0.0}
AUDIO_SECONDS = {"fleurs": 12.0}  # generous per-sentence duration of FLEURS speech
TEXT_TOKENS = 40  # generous input length in tokens when the sentences are not known in advance
PROMPT_TOKENS = 40  # a speech LLM's chat template and instruction around the input, in tokens
SELECTION_BYTES_PER_TEXT = 150  # selection.json bytes per (sentence, language) when texts are unknown
BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
STAGES = ("data", "speech", "record", "rank", "compare", "steer", "report")
#: rows x resamples x columns of the bootstrap calibration (about a second here), whatever the run's size
BOOTSTRAP_CALIBRATION_VALUES = 4e8


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024


def _dur(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _model_config(cfg: dict):
    from engine.model.catalog import HUB_CONFIGS, config_for
    from engine.model.loader import read_config

    path = Path(config_mod.model_path(cfg))
    if (path / "config.json").exists():
        return read_config(path), str(path)
    if cfg["model"]["id"] in HUB_CONFIGS:
        name = HUB_CONFIGS[cfg["model"]["id"]]
        return config_for(name), f"built-in config '{name}' of {cfg['model']['id']} (meta device)"
    return None, cfg["model"]["id"]


# ------------------------------------------------------------------------------------------------
# measurement helpers
# ------------------------------------------------------------------------------------------------
_STAGE_IMPORTS = ("import torch, transformers, zarr\n"
                  "from transformers import SeamlessM4Tv2Model, AutoConfig\n"
                  "import engine.pipeline.runner, engine.model.catalog, engine.pipeline.store\n")


def _in_fresh_process(code: str) -> int:
    """The integer that ``code`` prints last, run in a new interpreter after the imports every
    stage makes; -1 if it fails."""
    import subprocess
    import sys

    try:
        out = subprocess.run([sys.executable, "-c", _STAGE_IMPORTS + code], capture_output=True, text=True,
                             timeout=600, cwd=config_mod.REPO_ROOT, check=True)
        return int(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return -1


def stage_process_rss() -> int:
    """Resident bytes of a fresh stage process once it has imported what every stage imports
    (torch, transformers' SeamlessM4T v2, the pipeline), measured in a new interpreter: the
    calling process may hold anything (a model being built, other estimates)."""
    rss = _in_fresh_process("from engine.usage import rss_bytes\nprint(rss_bytes())")
    return rss if rss >= 0 else rss_bytes()


#: CPU and wall seconds spent in calibration so far (their ratio is the parallelism obtained now)
_SPENT = {"cpu": 0.0, "wall": 0.0}


def _best(fn, repeat: int = 3, *, wall_clock: bool = False) -> float:
    """Least CPU time (``wall_clock``: wall time, for work on a GPU) of ``repeat`` runs of ``fn()``."""
    best = math.inf
    for _ in range(repeat):
        c0, t0 = cpu_seconds(), time.perf_counter()
        fn()
        cpu, wall = cpu_seconds() - c0, time.perf_counter() - t0
        if not wall_clock:  # GPU work would distort the CPU parallelism measured here
            _SPENT["cpu"] += cpu
            _SPENT["wall"] += wall
        best = min(best, wall if wall_clock else cpu)
    return max(best, 1e-9)


# ------------------------------------------------------------------------------------------------
# calibration: throughputs measured on this code
# ------------------------------------------------------------------------------------------------
#: Seconds one timed matrix product may take while calibrating. On a CPU that emulates bfloat16
#: (AVX2 without AVX512_BF16 or AMX) a bf16 product is ~50-100x slower than fp32; rows and
#: repeats shrink until each product fits, so calibration costs seconds on any CPU.
MATMUL_CALL_BUDGET_S = 0.25


def _calibrate_matmul(device: str, dtype, d: int, batches) -> dict:
    """Seconds per multiply-accumulate of a weight matrix [16384, d] applied to B rows for every
    decoding batch size B in ``batches`` (one token per sequence: reading the weights dominates,
    so the cost per MAC falls almost as 1/B) and to up to 2048 rows (encoding, teacher forcing;
    compute-bound, so fewer rows give the same cost per MAC once a product would exceed
    ``MATMUL_CALL_BUDGET_S``). Returns ``{"encode": s, "decode": {B: s}}``."""
    import torch
    import torch.nn.functional as F

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
        return _best(run, repeat, wall_clock=device.startswith("cuda")) / (inner * rows * w.numel())

    probe = per_mac(16)
    enc_rows = 2048
    while enc_rows > 16 and probe * enc_rows * w.numel() > MATMUL_CALL_BUDGET_S:
        enc_rows //= 2
    return {"encode": min(probe, per_mac(enc_rows)) if enc_rows > 16 else probe,
            "decode": {int(b): per_mac(int(b)) for b in sorted(set(batches))}}


def _tiny_decoder(layers: int):
    import torch
    from transformers import SeamlessM4Tv2Config, SeamlessM4Tv2Model

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


def _calibrate_generate(batch: int) -> dict:
    """Framework cost of greedy decoding through the recorder's ``generate`` call: seconds per
    step with no compute to speak of (hidden size 32), split into a fixed part and a part per
    decoder layer (two models, 1 and 4 layers)."""
    import torch
    from transformers.utils import logging as hf_logging

    from engine.model.recorder import greedy

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
        per_step[layers] = (_best(lambda: run(steps), 2) - _best(lambda: run(1), 2)) / (steps - 1)
    layer = max(0.0, (per_step[4] - per_step[1]) / 3)
    return {"step_s": max(1e-5, per_step[1] - layer), "layer_s": layer}


def _calibrate_recorder(batch: int, audio_s: float, fixture: Path | None = None) -> dict:
    """The recorder's own costs apart from the model's arithmetic, measured by recording one
    speech and one text batch of ``batch`` examples with a tiny fixture model of the run's
    architecture (``fixture``; default the tiny SeamlessM4T, hidden size 96, so its arithmetic
    is negligible): CPU seconds per batch (features, prompts, hooks, teacher-forced pass,
    copies) and per greedy step, and the CPU seconds of loading a model directory."""
    from transformers.utils import logging as hf_logging

    from engine.model.loader import TINY_MODEL_DIR, load_model

    hf_logging.set_verbosity_error()
    t0 = cpu_seconds()
    lm = load_model(fixture or TINY_MODEL_DIR, device="cpu", dtype="float32")
    if getattr(lm, "decoder_only", False):
        from engine.model.lm_recorder import record_batches
    else:
        from engine.model.recorder import record_batches
    from engine.model.recorder import ModelInput
    load = cpu_seconds() - t0
    from engine.model.catalog import build_catalog

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
        short, long = _best(lambda: run(11), 2), _best(lambda: run(27), 2)
        step = max(0.0, (long - short) / 16)
        out[f"{modality}_batch_s"] = max(0.0, short - 11 * step)
        out[f"{modality}_step_s"] = step
    return out


def _calibrate_store(rows: int, cols: int, dtype: str) -> dict:
    """Seconds per stored value of the activation store's block write and column-block read,
    and its compressed size, on random values (activations compress no better in general)."""
    from engine.pipeline.store import MatrixStore

    rng = np.random.default_rng(0)
    block = rng.standard_normal((rows, cols)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        store = MatrixStore.create(Path(tmp) / "m", rows, cols, rows_per_block=rows, dtype=dtype)
        t0 = cpu_seconds()
        store.write_block(0, block, {"example_ids": []})
        write = cpu_seconds() - t0
        read = _best(lambda: [b for _, b in store.iter_col_blocks()], 2)
        size = sum(f.stat().st_size for f in (Path(tmp) / "m").rglob("*") if f.is_file())
    n = rows * cols
    return {"write_s_per_value": write / n, "read_s_per_value": read / n,
            "stored_bytes_per_value": size / n}


def _calibrate_rank(rows: int, n_labels: int, cols: int, device: str) -> dict:
    """What the rank stage does to one store chunk [rows, cols] (fp16): exact AP with its
    tie-breaker r (engine.science.ranking.average_precision) -> seconds per neuron and the chunk's peak
    extra memory; and the ASR decoder's per-language medians -> seconds per neuron."""
    from engine.model.steering import median_activations
    from engine.science.ranking import average_precision, on_device

    rng = np.random.default_rng(0)
    block = rng.standard_normal((rows, cols)).astype(np.float16)
    labels = np.arange(rows) % n_labels
    langs = [str(v) for v in labels]

    def ap():
        average_precision(on_device(block, device), labels, n_labels=n_labels, return_separation=True)

    # memory from the first call, as a stage process pays it (compiled kernels load then; after
    # a warm-up, freed heap would hide part of the peak); time from a second one
    _, extra = peak_above_now(ap)
    seconds = _best(ap, 1)
    m_cols = min(cols, max(16, int(4e6 // max(rows, 1))))  # linear in columns: a slice will do
    part = block[:, :m_cols].astype(np.float32)
    # and in languages (each one's medians of its rows and of all the others): a few will do
    some = sorted(set(langs))[:5]
    medians = _best(lambda: [median_activations(part, langs, lang, chunk_cols=m_cols) for lang in some], 2)
    medians *= n_labels / len(some)
    return {"s_per_neuron": seconds / cols, "chunk_extra_bytes": extra + block.nbytes,
            "medians_s_per_neuron": medians / m_cols}


def _calibrate_bootstrap(rows_per_lang: int, langs: list[str], cols: int, n_boot: int, device: str,
                         *, mem_cols: int | None = None, fresh_process: bool = True) -> dict:
    """The compare stage's bootstrap (engine.pipeline.stages.compare.bootstrap_ap) on a store of the run's rows
    with the run's number of resamples (one sort per neuron serves them all, so fewer resamples
    would overstate the cost of each): seconds per (resample, neuron) on ``cols`` columns, and
    the peak extra memory of a store of ``mem_cols`` columns (two store blocks: the second shows
    what the first leaves behind), measured in a fresh interpreter (in this process, heap left by
    earlier calibrations would hide part of it)."""
    from engine.pipeline.stages import compare as analysis
    from engine.pipeline.store import MatrixStore
    from engine.science.intervals import half_sample_splits

    L = len(langs)
    n = rows_per_lang * L
    ids = [f"s{i // L}/{langs[i % L]}/S2T" for i in range(n)]
    meta = {"example_ids": ids, "langs": [langs[i % L] for i in range(n)], "valid": {"1": [True] * n}}
    splits = half_sample_splits([i.split("/")[0] for i in ids], n_boot, 0)
    block = np.random.default_rng(0).standard_normal((n, cols)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        store = MatrixStore.create(Path(tmp) / "m", n, cols, rows_per_block=max(n, 1), dtype="float16")
        store.write_block(0, block, {"example_ids": ids})
        run = lambda: analysis.bootstrap_ap(store, meta, "1", splits, langs, Path(tmp) / "b.npy", device)  # noqa: E731
        if not fresh_process:  # the child's side: report the peak of the first call, nothing else
            return {"block_extra_bytes": peak_above_now(run)[1]}
        def child(c: int) -> int:
            return _in_fresh_process(f"from engine.tools.estimate import _calibrate_bootstrap\n"
                                     f"print(_calibrate_bootstrap({rows_per_lang}, {list(langs)!r}, {c}, "
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
        seconds = _best(run, 1)
    return {"s_per_resample_neuron": seconds / (n_boot * cols), "block_extra_bytes": extra}


def _statistics_step_bytes(L: int, n: int, k: int, ks: list[int]) -> int:
    """Peak extra memory of one compare step's statistics at width n, as the stage holds them:
    the point AP and r of both sides, one resample's (float64 [L, n] each), and
    ``replicate_statistics`` working on them. Run in a fresh interpreter (``_in_fresh_process``)."""
    from engine.science import crossmodal as analysis

    def step():
        rng = np.random.default_rng(0)
        held = [rng.random((L, n)) for _ in range(8)]
        analysis.replicate_statistics(*held[4:], min(k, n), [min(v, n) for v in ks])
    return peak_above_now(step)[1]


def _calibrate_statistics(L: int, widths: tuple[int, int], k: int, ks: list[int]) -> dict:
    """What the compare stage computes per half-sample (``crossmodal.replicate_statistics``: the whole
    k sweep from one ordering, the permutation test at k, Spearman) on random AP and tie-breaker
    matrices [L, N] at two widths: fixed seconds + seconds per neuron; and the step's memory per
    neuron (``_statistics_step_bytes`` at the wider width, in a fresh interpreter)."""
    from engine.science import crossmodal as analysis

    rng = np.random.default_rng(0)
    t = []
    for n in widths:
        a, b, sa, sb = (rng.random((L, n)) for _ in range(4))
        kk = [min(v, n) for v in ks]
        t.append(_best(lambda: analysis.replicate_statistics(a, b, sa, sb, min(k, n), kk), 2))
    per = max(0.0, (t[1] - t[0]) / (widths[1] - widths[0]))
    step_bytes = _in_fresh_process(f"from engine.tools.estimate import _statistics_step_bytes\n"
                                   f"print(_statistics_step_bytes({L}, {widths[1]}, {k}, {list(ks)!r}))")
    if step_bytes < 0:  # no child could run it: this process's figure, a lower bound
        step_bytes = _statistics_step_bytes(L, widths[1], k, list(ks))
    return {"resample": {"fixed_s": max(0.0, t[0] - per * widths[0]), "s_per_neuron": per,
                         "bytes_per_neuron": step_bytes / widths[1]}}


def model_shape(model, mcfg) -> dict:
    """What the cost model reads of an architecture (a model built on the meta device):
    hidden size, layer counts and parameter counts of the speech encoder (with a speech LLM's
    projector), the text encoder (an LM's token embedding: a lookup, no arithmetic), the shared
    decoder's layers and its output projection; for a speech LLM (``decoder_only``) also its
    audio window in encoder positions, its projector's parameters and positions over that window,
    and its tiny fixture."""
    from engine.model import speech_llm

    def params(prefix):
        return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))

    if not speech_llm.is_speech_llm(mcfg):
        d = int(mcfg.hidden_size)
        return {"decoder_only": False, "d_model": d, "speech_width": d, "p_speech": params("speech_encoder"),
                "p_projector": 0, "projector_positions": 0,
                "p_text": params("text_encoder"), "p_dec": params("text_decoder"), "p_lm": int(mcfg.vocab_size) * d,
                "dec_layers": len(model.text_decoder.layers),
                "speech_layers": len(model.speech_encoder.encoder.layers), "fixture": None}
    import torch

    fam = speech_llm.family(mcfg)
    tc, ac = mcfg.text_config, mcfg.audio_config
    d = int(tc.hidden_size)
    audio = fam.audio_layers.rsplit(".", 1)[0]  # the encoder module holding the layer list
    projector = {path.rsplit(".", 1)[0] for path, _, _ in fam.projector}
    # positions of the encoder window (stride-2 convolution over its feature frames), and the
    # projector's over that window (it runs on all of them, padding included)
    window = int(ac.max_source_positions)
    return {"decoder_only": True, "d_model": d, "speech_width": int(ac.d_model),
            "p_speech": params(audio + "."), "p_projector": sum(params(p + ".") for p in projector),
            "projector_positions": int(fam.projector_valid(torch.tensor([window]))[0]), "p_text": 0,
            "p_dec": params(fam.lm_layers + "."), "p_lm": int(tc.vocab_size) * d,
            "dec_layers": len(model.get_submodule(fam.lm_layers)),
            "speech_layers": len(model.get_submodule(fam.audio_layers)), "window_frames": window,
            "fixture": config_mod.REPO_ROOT / "fixtures" / f"tiny_{fam.model_type}"}


def _calibrate_espeak(sentences, langs) -> dict | None:
    """espeak-ng through the speech stage's own path (``synthesize_sentences`` into a fresh cache):
    CPU seconds per utterance, and audio seconds per character of each language's input text
    (one sentence per language), or None if espeak-ng is absent."""
    import shutil

    if shutil.which("espeak-ng") is None:
        return None
    from engine.pipeline.inputs.speech import SAMPLE_RATE, load_waveform, make_backend, synthesize_sentences

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
        per_char.setdefault(lang, float(np.mean(list(per_char.values()))) if per_char else 0.07)
    return {"s_per_utterance": seconds, "audio_s_per_char": per_char, "backend": backend}


# ------------------------------------------------------------------------------------------------
# the estimate
# ------------------------------------------------------------------------------------------------
def _prompt_widths(cfg: dict, mcfg, sentences: dict | None, fixture: Path) -> dict:
    """A speech LLM's prompt lengths in tokens, from the run's own processor when it can be read
    without network (a local or cached model), else from its family's tiny fixture processor:
    ``speech_fixed`` + ``speech_per_s`` x seconds (the chat template, the S2T instruction and the
    audio tokens as the processor expands them: Qwen2-Audio the utterance's own, Voxtral its
    whole 30 s window) and ``text`` (the T2T prompt of the run's sentences, mean of the longest
    language; None with the fixture, whose tiny tokenizer splits words into many more pieces).
    ``source`` says which processor it was."""
    from transformers import AutoProcessor

    from engine.model import speech_llm
    from engine.model.recorder import ModelInput
    from engine.science.languages import get_language

    fam = speech_llm.family(mcfg)
    try:
        processor = AutoProcessor.from_pretrained(config_mod.model_path(cfg), revision=cfg["model"]["revision"] or None,
                                                  local_files_only=True)  # an estimate never downloads
        source, own = "the run's processor", True
    except Exception:  # noqa: BLE001 - any failure to read it offline means: use the fixture's
        processor, source, own = AutoProcessor.from_pretrained(str(fixture)), f"the fixture's ({fixture.name})", False
    instruction = cfg["prompts"]["S2T"].format(target=get_language("eng").name)

    def width(item, prompt):
        return int(fam.build_prompts(processor, [item], [prompt])["input_ids"].shape[1])
    wav = (0.1 * np.random.default_rng(0).standard_normal(3 * 16000)).astype(np.float32)
    one, three = (width(ModelInput("s/deu/S2T", "deu", "speech", "eng", waveform=wav[:16000 * n]), instruction)
                  for n in (1, 3))
    text = None
    if own and sentences:
        prompt = cfg["prompts"]["T2T"].format(target=get_language("eng").name)
        text = max(float(np.mean([width(ModelInput("t/x/T2T", lang, "text", "eng", text=t), prompt) for t in ts[:5]]))
                   for lang, ts in sentences.items())
    return {"speech_fixed": one - (three - one) / 2, "speech_per_s": (three - one) / 2, "text": text, "source": source}


def _selection(cfg: dict):
    """The sentences the data stage will select, when they are known without network."""
    if cfg["data"]["source"] != "embedded":
        return None
    from engine.pipeline.inputs.corpus import select_embedded

    d = cfg["data"]
    return select_embedded(d["langs"], n=d["n_identify"] + d["n_steer"], seed=d["seed"], n_steer=d["n_steer"])


def estimate(cfg: dict, nodes: int = 1, gpus_per_node: int = 1) -> dict:
    """Per-stage time, peak RSS, GPU memory and disk of a run of ``cfg``, plus run totals.

    ``nodes`` x ``gpus_per_node`` ranks of one torchrun launch (``engine.pipeline.launch``): each stage's
    shareable work (speech: sentences; record: row blocks; rank and compare: neuron chunks;
    steer: generations) is divided among them in whole units, the busiest rank setting the
    time; the rest (loading, preflight, rank 0's joining and statistics) is not. Peak memory is
    per rank; disk is the one shared output root every rank writes to.
    """
    if nodes < 1 or gpus_per_node < 1:
        from engine.errors import UserError

        raise UserError(f"--nodes {nodes} --gpus-per-node {gpus_per_node}: give whole numbers >= 1")
    world = nodes * gpus_per_node
    import torch
    from transformers import SeamlessM4Tv2Model  # noqa: F401
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the meta build warns about layer_idx, irrelevant here

    from engine.model.catalog import build_catalog
    from engine.model.loader import model_class, parse_dtype
    from engine.pipeline.store import resolve_store_dtype

    mcfg, source = _model_config(cfg)
    if mcfg is None:
        from engine.errors import UserError

        raise UserError(f"cannot estimate for model '{cfg['model']['id']}' without its config; "
                        "set model.id to a local directory holding config.json")
    _SPENT.update(cpu=0.0, wall=0.0)
    c0, t0 = cpu_seconds(), time.perf_counter()
    with torch.device("meta"):
        model = model_class(mcfg)(mcfg)
    cat = build_catalog(model)
    # every stage's process loads the config and builds the catalog on meta once (preflight)
    preflight_s = 2 * (cpu_seconds() - c0)
    _SPENT["cpu"] += cpu_seconds() - c0
    _SPENT["wall"] += time.perf_counter() - t0
    base_rss = stage_process_rss()

    n_params = sum(p.numel() for p in model.parameters())

    shape = model_shape(model, mcfg)
    d_model, dec_layers, speech_layers = shape["d_model"], shape["dec_layers"], shape["speech_layers"]
    p_speech, p_text, p_dec, p_lm = shape["p_speech"], shape["p_text"], shape["p_dec"], shape["p_lm"]
    decoder_only = shape["decoder_only"]
    langs, steps = list(cfg["data"]["langs"]), list(cfg["record"]["steps"])
    L, S = len(langs), len(steps)
    n_id, n_steer = cfg["data"]["n_identify"] * L, cfg["data"]["n_steer"] * L
    n_dec = cat.n_neurons("text_decoder")
    n_enc = {"speech": cat.n_neurons("speech_encoder"), "text": cat.n_neurons("text_encoder")}
    width = {"S2T": n_enc["speech"] + S * n_dec, "T2T": n_enc["text"] + S * n_dec, "ASR": n_enc["speech"] + S * n_dec}
    wbytes = BYTES.get(cfg["model"]["dtype"], 4)
    weight_bytes = n_params * wbytes
    bs, rpb = cfg["model"]["batch_size"], cfg["record"]["rows_per_block"]
    cpc = cfg["record"]["cols_per_chunk"]
    n_boot, ks, k = cfg["rank"]["n_boot"], list(cfg["rank"]["k_sweep"]), cfg["rank"]["k"]
    device = cfg["model"]["device"]
    on_gpu = device.startswith("cuda")
    measure_gpu = on_gpu and torch.cuda.is_available()
    tdtype = parse_dtype(cfg["model"]["dtype"], torch.device("cuda" if on_gpu else "cpu"))
    sdtype = resolve_store_dtype(cfg["record"]["store_dtype"], tdtype)  # "auto": the model's 16-bit type
    sb = BYTES[sdtype]

    # ---- calibration ---------------------------------------------------------------------------
    cal: dict = {"preflight_s": preflight_s, "process_rss_bytes": base_rss}
    mm_device = "cuda" if measure_gpu else "cpu"
    # every decoding batch size of the run: identification batches over all of a task's rows,
    # steering batches over one (source, task)'s held-out rows
    decode_batches = {min(bs, n_id - i) for i in range(0, n_id, bs)} | \
        {min(bs, cfg["data"]["n_steer"] - i) for i in range(0, cfg["data"]["n_steer"], bs)}
    gpu_assumed = on_gpu and not measure_gpu
    if not gpu_assumed:  # a CUDA run with no GPU visible uses the stated GPU model instead
        cal["matmul_s_per_mac"] = _calibrate_matmul(mm_device, tdtype, min(d_model, 4096), decode_batches or {1})
        cal["generate"] = _calibrate_generate(min(bs, max(n_id, n_steer)))
    from engine.files import sha256_file

    with tempfile.NamedTemporaryFile() as fh:
        fh.write(os.urandom(32 * 2**20))
        fh.flush()
        cal["sha256_s_per_byte"] = _best(lambda: sha256_file(fh.name), 2) / (32 * 2**20)
    cal["store"] = _calibrate_store(min(rpb, max(n_id, 1)), 8192, sdtype)
    rank_device = device if measure_gpu or not on_gpu else "cpu"
    cal["rank"] = _calibrate_rank(n_id, L, min(8192, n_dec), rank_device)
    from engine.pipeline.store import COLS_PER_CHUNK as STORE_COLS

    # one store block (its memory is the stage's working set); fewer columns when rows x resamples
    # make that slow (cost and memory are linear in columns)
    boot_cols = min(STORE_COLS, n_dec, max(16, int(BOOTSTRAP_CALIBRATION_VALUES // max(1, n_id * max(n_boot, 1)))))
    cal["bootstrap"] = _calibrate_bootstrap(cfg["data"]["n_identify"], langs, boot_cols, max(1, n_boot), rank_device,
                                            mem_cols=min(2 * STORE_COLS, n_dec))
    widths = (min(2048, n_dec), min(32768, n_dec))
    if widths[0] == widths[1]:
        widths = (max(1, widths[1] // 4), widths[1])
    cal["statistics"] = _calibrate_statistics(L, widths, k, ks)
    sel = _selection(cfg)
    backend = cfg["speech"]["backend"]
    espeak = _calibrate_espeak(sel.sentences if sel else None, langs) if backend == "espeak" and sel else None
    if backend == "espeak" and espeak is None and sel is None:
        espeak = {"s_per_utterance": 0.05, "audio_s_per_char": {lang: 0.07 for lang in langs}, "backend": None}

    if gpu_assumed:  # cannot measure the run's GPU here: assume one (stated in the output)
        # per MAC: a decoding step reads every weight once for all B rows (bandwidth-bound), but
        # never faster than the arithmetic itself (compute-bound)
        mac = 1 / (ASSUMED_GPU["tflops"] * 1e12 / 2)
        mm = {"encode": mac,
              "decode": {b: max(mac, wbytes / (ASSUMED_GPU["weight_read_gbps"] * 1e9) / b) for b in decode_batches or {1}}}
        gen = {"step_s": ASSUMED_GPU["step_overhead_s"], "layer_s": ASSUMED_GPU["layer_overhead_s"]}
    else:
        mm, gen = dict(cal["matmul_s_per_mac"]), dict(cal["generate"])
    ap_speedup = ASSUMED_GPU["ap_speedup"] if gpu_assumed else 1.0

    # ---- inputs -------------------------------------------------------------------------------
    if sel is not None:
        texts = {lang: [s.texts[lang] for s in sel.sentences] for lang in langs}
        mean_chars = {lang: float(np.mean([len(t) for t in texts[lang]])) for lang in langs}
    else:
        mean_chars = {lang: 120.0 for lang in langs}
    if backend == "espeak" and espeak:
        readings = {lang: [espeak["backend"].input_text(s, lang) for s in sel.sentences] for lang in langs} if (
            sel and espeak["backend"]) else None
        audio_s = {lang: (float(np.mean([len(r) for r in readings[lang]])) if readings else mean_chars[lang])
                   * espeak["audio_s_per_char"][lang] for lang in langs}
    else:
        audio_s = {lang: AUDIO_SECONDS.get(cfg["data"]["source"], 12.0) for lang in langs}
    rec = _calibrate_recorder(max(1, min(bs, max(n_id, n_steer))), float(np.mean(list(audio_s.values()))),
                              shape["fixture"])
    cal["recorder"] = rec
    max_frames = max(audio_s.values()) * 50 * 1.15  # a batch pads to its longest utterance
    tokens = TEXT_TOKENS if sel is None else min(TEXT_TOKENS * 2, max(mean_chars.values()) / 2.5 + 2)
    if decoder_only:
        # a speech LLM's audio encoder always runs on its whole window; the LM reads the prompt:
        # the instruction and chat template, then the projector's positions or the text's tokens
        max_frames = shape["window_frames"]
        widths = cal["prompt_tokens"] = _prompt_widths(cfg, mcfg, texts if sel is not None else None,
                                                       shape["fixture"])
        prompt_tokens = {"speech": widths["speech_fixed"] + widths["speech_per_s"] * max(audio_s.values()) * 1.15,
                         "text": widths["text"] if widths["text"] is not None else PROMPT_TOKENS + tokens}
    else:
        prompt_tokens = {"speech": 0.0, "text": 0.0}

    # ---- model compute per batch of B examples -------------------------------------------------
    # Every cost is a pair [CPU seconds, device seconds]: device seconds are the model's arithmetic
    # (and, for an assumed GPU, its per-step overheads), GPU seconds on a CUDA run; on a CPU run
    # they are CPU seconds too and are added to the first entry at the end.
    def cost(cpu: float = 0.0, dev: float = 0.0) -> np.ndarray:
        return np.array([cpu, dev], dtype=float)

    def framework(seconds: float) -> np.ndarray:  # generate's per-step overheads
        return cost(dev=seconds) if gpu_assumed else cost(cpu=seconds)

    def encode_s(modality: str, B: int) -> np.ndarray:
        """Encoder arithmetic plus the recorder's own per-batch cost (features, hooks, copies)."""
        fixed = rec[f"{modality}_batch_s"] * B / max(1, min(bs, max(n_id, n_steer)))
        if modality == "speech":
            T = max_frames
            attn = 2 * T * T * shape["speech_width"] * speech_layers
            projector = shape["p_projector"] * shape["projector_positions"]
            return cost(fixed, (p_speech * T + attn + projector) * B * mm["encode"])
        return cost(fixed, p_text * tokens * 1.3 * B * mm["encode"])

    def prefill_s(B: int, modality: str) -> np.ndarray:
        """A decoder-only LM's pass over the prompt before its first new token (none otherwise)."""
        P = prompt_tokens[modality]
        return cost(dev=(p_dec * P + 2 * P * P * d_model * dec_layers) * B * mm["encode"])

    def decode_s(B: int, n_new: int, modality: str) -> np.ndarray:
        T_enc = max_frames / 8 if modality == "speech" else tokens
        if decoder_only:  # self-attention over the prompt instead of cross-attention to an encoder
            T_enc = prompt_tokens[modality]
        per_step = (p_dec + p_lm) * B * mm["decode"][B] + 2 * B * T_enc * d_model * dec_layers * mm["encode"]
        # framework cost per step: the recorder's generate on the 2-layer fixture, plus the
        # measured cost of every further decoder layer
        return prefill_s(B, modality) + n_new * (cost(rec[f"{modality}_step_s"], per_step)
                                                 + framework(gen["layer_s"] * max(0, dec_layers - 2)))

    def forced_s(B: int, width_tokens: int, modality: str = "text") -> np.ndarray:
        # a decoder-only LM's teacher-forced pass reads its prompt again
        width_tokens = width_tokens + prompt_tokens[modality]
        return cost(dev=p_dec * B * width_tokens * mm["encode"]) + framework(gen["layer_s"] * max(0, dec_layers - 2))

    def batches(n_rows: int, B: int) -> list[int]:
        return [min(B, n_rows - i) for i in range(0, n_rows, B)] if n_rows else []

    load_s = rec["load_s"] + weight_bytes * cal["sha256_s_per_byte"] * 0.5  # reads the bytes once, faster than hashing

    # ---- per stage -------------------------------------------------------------------------------
    stages: dict[str, dict] = {}
    # data
    if sel is not None:

        sel_bytes = len(json.dumps(sel.to_json(), indent=1, sort_keys=True).encode())
    else:
        sel_bytes = (n_id + n_steer) // L * (L + 1) * SELECTION_BYTES_PER_TEXT
    stages["data"] = {"time_s": cost(preflight_s), "peak_rss_bytes": base_rss, "disk_bytes": sel_bytes + 2000}
    # speech
    n_utt = (n_id + n_steer)
    if backend == "espeak" and espeak:
        tts_s = cost(espeak["s_per_utterance"] * n_utt)
    else:  # XTTS runs on the run's device
        tts_s = cost(dev=ASSUMED_TTS_S.get(backend, 1.0) * n_utt)
    audio_bytes = int(sum(audio_s[lang] for lang in langs) * (n_utt // L) * 16000 * 4 + 80 * n_utt)
    stages["speech"] = {"time_s": cost(preflight_s) + tts_s, "shared_s": tts_s, "units": n_utt // L,
                        "peak_rss_bytes": base_rss,
                        "disk_bytes": audio_bytes + 200 * n_utt + 1000}
    # record
    n_new = cfg["record"]["max_new_tokens"]
    rec_compute = cost()
    for task, modality in (("S2T", "speech"), ("T2T", "text"), ("ASR", "speech")):
        for B in batches(n_id, bs):
            # SeamlessM4T's ASR is served S2T's speech-encoder pass (run.RECORD_GROUPS); a speech
            # LLM's instruction is part of its LM's input, so each task has its own
            encode = encode_s(modality, B) if task != "ASR" or decoder_only else cost()
            if decoder_only and modality == "speech":  # generate and the teacher-forced pass each run the audio tower
                encode = encode + cost(dev=encode[1])
            rec_compute += encode + decode_s(B, n_new, modality) + forced_s(B, max(steps) + 1, modality)
    # one speech-encoder matrix serves S2T and ASR; decoder matrices per task and step
    store_values = n_id * (n_enc["speech"] + n_enc["text"] + 3 * S * n_dec)
    store_io = store_values * cal["store"]["write_s_per_value"]
    hash_s = weight_bytes * cal["sha256_s_per_byte"]
    widest = max(width.values())
    widest_record = n_enc["speech"] + 2 * S * n_dec  # S2T and ASR blocks are recorded together
    block_rows = min(rpb, n_id)
    act_bytes = bs * max_frames * 4 * shape["speech_width"] * wbytes * 2 if n_id else 0  # largest encoder activations
    # weights stored in another type than the run computes in (a bf16 checkpoint run in fp32)
    # are converted at load: the stored copy is resident beside the converted one at the peak
    stored = str(getattr(mcfg, "dtype", None) or "").removeprefix("torch.")
    convert_bytes = n_params * BYTES[stored] if stored in BYTES and stored != cfg["model"]["dtype"] else 0
    ram_record = (base_rss + weight_bytes + convert_bytes + block_rows * widest_record * 4 * 3 + min(bs, n_id) * widest_record * 4
                  + act_bytes)
    store_bytes = int(store_values * min(sb, cal["store"]["stored_bytes_per_value"]))
    store_meta = 3 * (n_id * 120 + (n_id // max(block_rows, 1) + 1) * (S + 1) * 900)
    stages["record"] = {"time_s": cost(preflight_s + hash_s + load_s + store_io) + rec_compute,
                        "shared_s": cost(store_io) + rec_compute, "units": -(-n_id // max(rpb, 1)),
                        "peak_rss_bytes": ram_record, "disk_bytes": store_bytes + store_meta}
    if on_gpu:
        stages["record"]["gpu_peak_bytes"] = weight_bytes + act_bytes + bs * (p_lm // d_model) * 4
        stages["record"]["peak_rss_bytes"] = base_rss + weight_bytes + block_rows * widest_record * 4 * 3
    # rank
    rank_cols = sum(width.values())
    ap_s = rank_cols * cal["rank"]["s_per_neuron"] / ap_speedup
    rank_s = cost(n_id * rank_cols * cal["store"]["read_s_per_value"]) + (
        cost(dev=ap_s) if rank_device.startswith("cuda") or gpu_assumed else cost(ap_s))
    medians_s = S * n_dec * cal["rank"]["medians_s_per_neuron"]  # ASR decoder, every language
    # AP and its tie-breaker r (float64 each) per task, the ASR decoder medians (float32)
    ap_bytes = sum(2 * (w * L * 8 + 128) for w in width.values()) + 2 * S * (L * n_dec * 4 + 128)
    chunk_cols = 8192
    ram_rank = base_rss + cal["rank"]["chunk_extra_bytes"] * min(chunk_cols, n_dec) / min(8192, n_dec) \
        + rank_cols * L * 8 * 2 / max(1, len(width) * (S + 1)) * 2
    rank_units = sum(-(-w // cpc) for w in (n_enc["speech"], n_enc["text"])) + 3 * S * -(-n_dec // cpc)
    stages["rank"] = {"time_s": cost(preflight_s + medians_s) + rank_s, "shared_s": cost(medians_s) + rank_s,
                      "units": rank_units, "peak_rss_bytes": ram_rank,
                      "disk_bytes": ap_bytes + 3 * 600}
    # compare
    st = cal["statistics"]
    resample_s = st["resample"]["fixed_s"] + st["resample"]["s_per_neuron"] * n_dec
    boot_s = 2 * n_boot * n_dec * cal["bootstrap"]["s_per_resample_neuron"] / ap_speedup
    boot = cost(dev=boot_s) if rank_device.startswith("cuda") or gpu_assumed else cost(boot_s)
    per_step = boot + cost((n_boot + 1) * resample_s)  # the point estimate costs what a resample does
    boot_bytes = 2 * n_boot * L * n_dec * 4
    compare_json = S * (2500 + 60 * L * L + 40 * len(ks)) + (1000 + 10 * dec_layers) * (2 * S + 2)
    # one store block's bootstrap at a time (the resamples go to scratch files, not memory),
    # then the statistics of each resample on the step's AP and r (measured). Summed, not the
    # larger of the two: the allocator keeps the heap the bootstrap grew (rehearsals measure it).
    stages["compare"] = {"time_s": cost(preflight_s) + S * per_step, "shared_s": S * boot, "units": -(-n_dec // cpc),
                         "peak_rss_bytes": base_rss
                         + cal["bootstrap"]["block_extra_bytes"] + st["resample"]["bytes_per_neuron"] * n_dec,
                         "disk_bytes": compare_json, "transient_disk_bytes": boot_bytes}
    # steer
    pairs = [tuple(p) for p in cfg["steer"]["pairs"]]
    n_pairs = len(pairs)
    sources = len({s for s, t in pairs})
    arms = 1 + (1 if cfg["steer"]["random_control"] else 0)
    per_src = cfg["data"]["n_steer"]
    steer_calls = {"speech": sources + n_pairs * S * arms, "text": sources + n_pairs * S * arms}
    steer_new = cfg["steer"]["max_new_tokens"]
    steer_compute = cost()
    for modality, calls in steer_calls.items():
        for B in batches(per_src, bs):
            # SeamlessM4T's steered outputs come through the recorder (a step-1 forced pass
            # after generate); a speech LLM's from generate alone (lm_recorder.greedy_outputs)
            steer_compute += calls * (encode_s(modality, B) + decode_s(B, steer_new, modality)
                                      + (cost() if decoder_only else forced_s(B, 2, modality)))
    steer_generations = sum(steer_calls.values()) * per_src
    steer_text_bytes = steer_generations * steer_new * 5
    steer_rows = (2 * sources * 0 + n_pairs * 2 * (1 + S * arms))
    stages["steer"] = {"time_s": cost(preflight_s + load_s + 2.0) + steer_compute, "shared_s": steer_compute,
                       "units": sum(steer_calls.values()),
                       "peak_rss_bytes": base_rss + weight_bytes + convert_bytes + min(bs, per_src) * widest * 4 * 2
                       + act_bytes * min(bs, per_src) / bs,  # its batches hold one source's held-out rows
                       "disk_bytes": steer_text_bytes * 2 + steer_rows * 700}
    if on_gpu:
        stages["steer"]["gpu_peak_bytes"] = weight_bytes + act_bytes + bs * (p_lm // d_model) * 4
    # report
    stages["report"] = {"time_s": cost(preflight_s), "peak_rss_bytes": base_rss,
                        "disk_bytes": compare_json + steer_rows * 700 + 3000}

    # CPU seconds become wall time divided by the parallelism this process got while calibrating
    # (2 on an idle 2-core machine running torch; below 1 when others share the cores); device
    # seconds on a GPU are wall time as they are
    parallel = _SPENT["cpu"] / max(_SPENT["wall"], 1e-9)
    for figs in stages.values():
        units = int(figs.pop("units", 1))
        cpu, dev = busiest_rank(figs.pop("time_s"), figs.pop("shared_s", cost()), units, world)
        figs["ranks_busy"] = min(world, units)
        if not on_gpu:
            cpu, dev = cpu + dev, 0.0
        figs["cpu_s"] = cpu
        if on_gpu:
            figs["gpu_s"] = dev
        figs["time_s"] = cpu / parallel + dev
    total_s = sum(s["time_s"] for s in stages.values())
    bound = max(STAGES, key=lambda name: stages[name]["time_s"])
    disk_total = sum(s["disk_bytes"] for s in stages.values()) + boot_bytes
    peak = max(s["peak_rss_bytes"] for s in stages.values())
    assumptions = {
        "device": device, "measured_on": mm_device if not gpu_assumed else "cpu (GPU assumed, none visible)",
        "gpu": ASSUMED_GPU if gpu_assumed else None,
        "tts_s_per_utterance": None if backend == "espeak" else ASSUMED_TTS_S.get(backend, 1.0),
        "audio_seconds_per_sentence": {lang: round(v, 2) for lang, v in audio_s.items()},
        "outputs_run_to_max_new_tokens": True,
        "launch": {"shared_output_root": world > 1, "each_rank_its_own_gpu_and_cpu_cores": world > 1},
    }
    calibration = {
        **({} if gpu_assumed else {
            "matmul_gmac_s": {"encode": round(1e-9 / mm["encode"], 2),
                              **{f"decode_batch_{b}": round(1e-9 / v, 2) for b, v in mm["decode"].items()}},
            "generate_ms_per_step": round(1e3 * gen["step_s"], 3),
            "generate_ms_per_layer_step": round(1e3 * gen["layer_s"], 3)}),
        "recorder_s": {k2: round(v, 4) for k2, v in rec.items()},
        **({"prompt_tokens": {k2: (round(v, 1) if isinstance(v, float) else v) for k2, v in cal["prompt_tokens"].items()}}
           if "prompt_tokens" in cal else {}),
        "sha256_mb_s": round(1e-6 / cal["sha256_s_per_byte"], 1),
        "store_write_mvalues_s": round(1e-6 / cal["store"]["write_s_per_value"], 2),
        "store_read_mvalues_s": round(1e-6 / cal["store"]["read_s_per_value"], 2),
        "store_bytes_per_value": round(cal["store"]["stored_bytes_per_value"], 3),
        "ap_us_per_neuron": round(1e6 * cal["rank"]["s_per_neuron"], 3),
        "ap_rows": n_id,
        "bootstrap_us_per_resample_neuron": round(1e6 * cal["bootstrap"]["s_per_resample_neuron"], 3),
        "resample_statistics_s": {"fixed": round(st["resample"]["fixed_s"], 4),
                                  "per_1k_neurons": round(1e3 * st["resample"]["s_per_neuron"], 5)},
        "espeak_s_per_utterance": None if not espeak else round(espeak["s_per_utterance"], 3),
        "stage_process_rss_mib": round(base_rss / 2**20, 1),
        "preflight_s": round(preflight_s, 2),
        "parallelism_now": round(parallel, 2),
    }
    n_id_l = cfg["data"]["n_identify"]
    result = {
        "model": source, "parameters": int(n_params),
        "neurons": {"speech_encoder": n_enc["speech"], "text_encoder": n_enc["text"], "text_decoder": n_dec,
                    "total": cat.total},
        "examples": {"record_per_task": n_id, "record_tasks": 3, "forward_passes": 3 * n_id, "encoder_passes": 2 * n_id,
                     "steering_generations": steer_generations, "held_out": n_steer},
        "stages": {name: {key: (int(v) if key.endswith("bytes") else round(float(v), 3))
                          for key, v in figs.items()} for name, figs in stages.items()},
        "disk_bytes": {"activation_store": store_values * sb, "activation_store_compressed": store_bytes,
                       "ap_and_medians": ap_bytes, "bootstrap_transient": boot_bytes, "audio_cache": audio_bytes,
                       "total": disk_total},
        "ram_bytes": {"record": int(stages["record"]["peak_rss_bytes"]), "rank": int(ram_rank), "peak": int(peak)},
        "compute": {"hours": {name: round(stages[name]["time_s"] / 3600, 3) for name in STAGES}
                    | {"total": round(total_s / 3600, 3)}},
        "assumptions": assumptions, "calibration": calibration,
        "launch": {"nodes": nodes, "gpus_per_node": gpus_per_node, "ranks": world, "bounded_by": bound},
    }
    result["lines"] = [
        f"profile {cfg['profile']['name']}: model {source}, {n_params:,} parameters ({cfg['model']['dtype']}, "
        f"{_size(weight_bytes)}) on {device}",
        f"neurons: speech encoder {n_enc['speech']:,}, text encoder {n_enc['text']:,}, decoder {n_dec:,} "
        f"per step x {S} steps; catalog total {cat.total:,}",
        f"examples: {n_id:,} per recorded task (S2T, T2T, ASR: {L} languages x {n_id_l}), "
        f"{n_steer:,} held out; {steer_generations:,} steered generations of <= {steer_new} tokens",
        "measured here: " + ", ".join(f"{k2}={v}" for k2, v in calibration.items()),
        ("assumed GPU (none visible): " + json.dumps(ASSUMED_GPU)) if gpu_assumed else
        f"costs measured on {mm_device}; outputs assumed to run to max_new_tokens (an upper bound)",
    ]
    for name in STAGES:
        s = stages[name]
        extra = f", GPU {_size(s['gpu_peak_bytes'])}" if "gpu_peak_bytes" in s else ""
        scratch = f" (+{_size(s['transient_disk_bytes'])} scratch while running)" if "transient_disk_bytes" in s else ""
        gpu_s = f" + {s['gpu_s']:.0f} GPU s" if "gpu_s" in s else ""
        result["lines"].append(f"  {name:8s} time {_dur(s['time_s'])} ({s['cpu_s']:.1f} CPU s{gpu_s}), peak RAM {_size(s['peak_rss_bytes'])}{extra}, "
                               f"disk {_size(s['disk_bytes'])}{scratch}")
    result["lines"].append(f"total: ~{_dur(total_s)}, peak RAM {_size(peak)}{' per rank' if world > 1 else ''}, "
                           f"disk {_size(disk_total)} (activation store {_size(store_bytes)} of "
                           f"{_size(store_values * sb)} raw, {sdtype})")
    result["lines"].append(
        f"launch: {nodes} node(s) x {gpus_per_node} GPU(s) = {world} rank(s)"
        + (", one output root every node mounts, each rank its own GPU and CPU cores" if world > 1 else "")
        + f"; the {bound} stage bounds the run ({_dur(stages[bound]['time_s'])}, "
        f"{stages[bound]['ranks_busy']} rank(s) busy)")
    from engine.science.crossmodal import permutation_method

    permutation = permutation_method(L)
    if permutation["method"] == "monte_carlo":
        result["lines"].append(f"permutation test: {L}! matchings cannot be enumerated; Monte Carlo over "
                               f"{permutation['matchings']:,} random matchings (engine.science.crossmodal)")
    return json.loads(json.dumps(result, default=lambda o: int(o) if isinstance(o, np.integer) else str(o)))


def busiest_rank(total, shared, units: int, world: int) -> tuple[float, float]:
    """``(CPU s, device s)`` of the busiest of ``world`` ranks for a stage costing ``total`` in one
    process, ``shared`` of which splits into ``units`` equal units dealt out whole (engine.pipeline.launch:
    unit i to rank i % world); the rest every rank (or rank 0 alone) spends in full."""
    share = -(-units // world) / units if units > 0 else 1.0
    cpu, dev = (float(t) - float(x) * (1.0 - share) for t, x in zip(total, shared))
    return cpu, dev


def estimate_arguments(parser) -> None:
    config_mod.profile_arguments(parser)
    parser.add_argument("--nodes", type=int, default=1, help="nodes of the torchrun launch (default 1)")
    parser.add_argument("--gpus-per-node", type=int, default=1,
                        help="ranks per node, one GPU each (torchrun --nproc_per_node; default 1)")


def estimate_command(args) -> int:
    cfg = config_mod.load_profile(args.profile, args.overrides)
    result = estimate(cfg, nodes=args.nodes, gpus_per_node=args.gpus_per_node)
    for line in result.pop("lines"):
        print(line)
    print(json.dumps(result, sort_keys=True))
    return 0
