"""The cost model: per stage, time, peak RSS, GPU memory and disk of a run, from its ``Context``
(the run's plan and what was measured for it), and the launch that spreads them over ranks.

Each stage's function returns its figures in one process: ``time_s`` (a ``[CPU s, device s]``
pair, see ``context.seconds``), ``shared_s`` (the part of it that divides among ranks) in
``units`` whole units, ``peak_rss_bytes``, ``disk_bytes`` and, where they apply,
``gpu_peak_bytes`` and ``transient_disk_bytes``. ``launch`` turns them into the busiest rank's
CPU, GPU and wall seconds.
"""
from __future__ import annotations

import json

import numpy as np

from engine.errors import UserError
from engine.pipeline.stages import STAGES
from engine.tools.estimate import sizes
from engine.tools.estimate.assumptions import ASSUMED_TTS_S, SELECTION_BYTES_PER_TEXT
from engine.tools.estimate.context import Context, batches, measured_context, seconds
from engine.tools.estimate.measure import parallelism
from engine.tools.estimate.summary import summarize


def estimate(cfg: dict, nodes: int = 1, gpus_per_node: int = 1) -> dict:
    """Per-stage time, peak RSS, GPU memory and disk of a run of ``cfg``, plus run totals.

    ``nodes`` x ``gpus_per_node`` ranks of one torchrun launch (``engine.pipeline.launch``): each stage's
    shareable work (speech: sentences; record: row blocks; rank and compare: neuron chunks;
    steer: generations) is divided among them in whole units, the busiest rank setting the
    time; the rest (loading, preflight, rank 0's joining and statistics) is not. Peak memory is
    per rank; disk is the one shared output root every rank writes to. Returns the JSON-ready
    dict that ``summary.summarize`` describes, its printed ``lines`` included.
    """
    if nodes < 1 or gpus_per_node < 1:
        raise UserError(f"--nodes {nodes} --gpus-per-node {gpus_per_node}: give whole numbers >= 1")
    ctx = measured_context(cfg, nodes, gpus_per_node)
    stages = {name: STAGE_COSTS[name](ctx) for name in STAGES}
    parallel = parallelism()
    return summarize(ctx, launch(ctx, stages, parallel), parallel)


# ------------------------------------------------------------------------------------------------
# per stage, in one process
# ------------------------------------------------------------------------------------------------
def _sorting_s(ctx: Context, s: float) -> np.ndarray:
    """Seconds of exact AP or the bootstrap (sorts): device seconds where they run on a GPU."""
    p = ctx.plan
    return seconds(dev=s) if p.rank_device.startswith("cuda") or p.gpu_assumed else seconds(s)


def _gpu_peak_bytes(ctx: Context) -> float:
    """GPU bytes of a stage holding the model: its weights, one batch's encoder activations, and
    one position's logits over the vocabulary per example (float32)."""
    p = ctx.plan
    return p.weight_bytes + sizes.activation_bytes(ctx) + p.bs * (p.shape["p_lm"] // p.shape["d_model"]) * 4


def data(ctx: Context) -> dict:
    """The data stage: a preflight, and ``selection.json`` on disk."""
    p = ctx.plan
    if p.sel is not None:
        sel_bytes = len(json.dumps(p.sel.to_json(), indent=1, sort_keys=True).encode())
    else:
        sel_bytes = (p.n_id + p.n_steer) // p.L * (p.L + 1) * SELECTION_BYTES_PER_TEXT
    return {"time_s": seconds(ctx.preflight_s), "peak_rss_bytes": ctx.base_rss, "disk_bytes": sel_bytes + 2000}


def speech(ctx: Context) -> dict:
    """The speech stage: every utterance synthesised (espeak-ng on the CPU as measured; XTTS on the
    run's device at its stated speed), shared by sentence; the audio cache on disk."""
    p, n_utt = ctx.plan, sizes.utterances(ctx.plan)
    if p.backend == "espeak" and ctx.espeak:
        tts_s = seconds(ctx.espeak["s_per_utterance"] * n_utt)
    else:  # XTTS runs on the run's device
        tts_s = seconds(dev=ASSUMED_TTS_S.get(p.backend, 1.0) * n_utt)
    return {"time_s": seconds(ctx.preflight_s) + tts_s, "shared_s": tts_s, "units": n_utt // p.L,
            "peak_rss_bytes": ctx.base_rss,
            "disk_bytes": sizes.audio_bytes(ctx) + 200 * n_utt + 1000}


def record(ctx: Context) -> dict:
    """The record stage: hashing and loading the weights, then per task its encoder, greedy
    decoding and the teacher-forced pass over every batch, and the store's writes, shared by row
    block; the model, a store block and a batch's activations in memory; the store on disk."""
    p = ctx.plan
    n_new = p.cfg["record"]["max_new_tokens"]
    rec_compute = seconds()
    for task, modality in (("S2T", "speech"), ("T2T", "text"), ("ASR", "speech")):
        for B in batches(p.n_id, p.bs):
            # SeamlessM4T's ASR is served S2T's speech-encoder pass (run.RECORD_GROUPS); a speech
            # LLM's instruction is part of its LM's input, so each task has its own
            encode = ctx.encode_s(modality, B) if task != "ASR" or p.decoder_only else seconds()
            if p.decoder_only and modality == "speech":  # generate and the teacher-forced pass each run the audio tower
                encode = encode + seconds(dev=encode[1])
            rec_compute += encode + ctx.decode_s(B, n_new, modality) + ctx.forced_s(B, max(p.steps) + 1, modality)
    store_io = sizes.store_values(p) * ctx.cal["store"]["write_s_per_value"]
    hash_s = p.weight_bytes * ctx.cal["sha256_s_per_byte"]
    # S2T and ASR blocks are recorded together, each decoder activity a matrix of its own
    widest_record = p.n_enc["speech"] + 2 * p.S * p.activities * p.n_dec
    block_rows = min(p.rpb, p.n_id)
    # weights stored in another type than the run computes in (a bf16 checkpoint run in fp32)
    # are converted at load: the stored copy is resident beside the converted one at the peak
    ram_record = (ctx.base_rss + p.weight_bytes + p.convert_bytes + block_rows * widest_record * 4 * 3
                  + min(p.bs, p.n_id) * widest_record * 4 + sizes.activation_bytes(ctx))
    store_meta = 3 * (p.n_id * 120 + (p.n_id // max(block_rows, 1) + 1) * (p.S + 1) * 900)
    figs = {"time_s": seconds(ctx.preflight_s + hash_s + ctx.load_s + store_io) + rec_compute,
            "shared_s": seconds(store_io) + rec_compute, "units": -(-p.n_id // max(p.rpb, 1)),
            "peak_rss_bytes": ram_record, "disk_bytes": sizes.store_bytes(ctx) + store_meta}
    if p.on_gpu:
        figs["gpu_peak_bytes"] = _gpu_peak_bytes(ctx)
        figs["peak_rss_bytes"] = ctx.base_rss + p.weight_bytes + block_rows * widest_record * 4 * 3
    return figs


def rank(ctx: Context) -> dict:
    """The rank stage: reading the store, exact AP of every recorded neuron (shared by neuron
    chunk) and the ASR decoder's per-language medians; one chunk's AP in memory; AP, r and the
    medians on disk."""
    p, cal = ctx.plan, ctx.cal
    rank_cols = sum(p.width.values())
    ap_s = rank_cols * cal["rank"]["s_per_neuron"] / ctx.ap_speedup
    rank_s = seconds(p.n_id * rank_cols * cal["store"]["read_s_per_value"]) + _sorting_s(ctx, ap_s)
    medians_s = p.S * p.n_dec * cal["rank"]["medians_s_per_neuron"]  # ASR decoder, every language
    chunk_cols = 8192
    ram_rank = ctx.base_rss + cal["rank"]["chunk_extra_bytes"] * min(chunk_cols, p.n_dec) / min(8192, p.n_dec) \
        + rank_cols * p.L * 8 * 2 / max(1, len(p.width) * (p.S + 1)) * 2
    rank_units = sum(-(-w // p.cpc) for w in (p.n_enc["speech"], p.n_enc["text"])) + 3 * p.S * -(-p.n_dec // p.cpc)
    return {"time_s": seconds(ctx.preflight_s + medians_s) + rank_s, "shared_s": seconds(medians_s) + rank_s,
            "units": rank_units, "peak_rss_bytes": ram_rank,
            "disk_bytes": sizes.ap_bytes(p) + 3 * 600}


def compare(ctx: Context) -> dict:
    """The compare stage: per recorded step the bootstrap of both sides' AP (shared by neuron
    chunk) and the statistics of the point estimate and every resample; one store block and a
    resample's statistics in memory; the resamples in scratch files while it runs."""
    p, cal = ctx.plan, ctx.cal
    st = cal["statistics"]
    resample_s = st["resample"]["fixed_s"] + st["resample"]["s_per_neuron"] * p.n_dec
    boot = _sorting_s(ctx, 2 * p.n_boot * p.n_dec * cal["bootstrap"]["s_per_resample_neuron"] / ctx.ap_speedup)
    per_step = boot + seconds((p.n_boot + 1) * resample_s)  # the point estimate costs what a resample does
    # one store block's bootstrap at a time (the resamples go to scratch files, not memory),
    # then the statistics of each resample on the step's AP and r (measured). Summed, not the
    # larger of the two: the allocator keeps the heap the bootstrap grew (rehearsals measure it).
    return {"time_s": seconds(ctx.preflight_s) + p.S * per_step, "shared_s": p.S * boot, "units": -(-p.n_dec // p.cpc),
            "peak_rss_bytes": ctx.base_rss
            + cal["bootstrap"]["block_extra_bytes"] + st["resample"]["bytes_per_neuron"] * p.n_dec,
            "disk_bytes": sizes.compare_json_bytes(p), "transient_disk_bytes": sizes.bootstrap_bytes(p)}


def steer(ctx: Context) -> dict:
    """The steer stage: loading the model, then every generation call (unsteered and steered)
    over a source's held-out rows, shared by call; the model and one source's batch in memory;
    the outputs and the results table on disk."""
    p = ctx.plan
    per_src = p.cfg["data"]["n_steer"]
    steer_calls = sizes.steer_calls(p)
    steer_new = p.cfg["steer"]["max_new_tokens"]
    steer_compute = seconds()
    for modality, calls in steer_calls.items():
        for B in batches(per_src, p.bs):
            # SeamlessM4T's steered outputs come through the recorder (a step-1 forced pass
            # after generate); a speech LLM's from generate alone (lm_recorder.greedy_outputs)
            steer_compute += calls * (ctx.encode_s(modality, B) + ctx.decode_s(B, steer_new, modality)
                                      + (seconds() if p.decoder_only else ctx.forced_s(B, 2, modality)))
    steer_text_bytes = sizes.steer_generations(p) * steer_new * 5
    widest = max(p.width.values())
    figs = {"time_s": seconds(ctx.preflight_s + ctx.load_s + 2.0) + steer_compute, "shared_s": steer_compute,
            "units": sum(steer_calls.values()),
            "peak_rss_bytes": ctx.base_rss + p.weight_bytes + p.convert_bytes + min(p.bs, per_src) * widest * 4 * 2
            + sizes.activation_bytes(ctx) * min(p.bs, per_src) / p.bs,  # its batches hold one source's held-out rows
            "disk_bytes": steer_text_bytes * 2 + sizes.steer_rows(p) * 700}
    if p.on_gpu:
        figs["gpu_peak_bytes"] = _gpu_peak_bytes(ctx)
    return figs


def report(ctx: Context) -> dict:
    """The report stage: a preflight, and the report beside the compare and steer results."""
    return {"time_s": seconds(ctx.preflight_s), "peak_rss_bytes": ctx.base_rss,
            "disk_bytes": sizes.compare_json_bytes(ctx.plan) + sizes.steer_rows(ctx.plan) * 700 + 3000}


STAGE_COSTS = {"data": data, "speech": speech, "record": record, "rank": rank, "compare": compare, "steer": steer,
               "report": report}


# ------------------------------------------------------------------------------------------------
# the launch
# ------------------------------------------------------------------------------------------------
def busiest_rank(total, shared, units: int, world: int) -> tuple[float, float]:
    """``(CPU s, device s)`` of the busiest of ``world`` ranks for a stage costing ``total`` in one
    process, ``shared`` of which splits into ``units`` equal units dealt out whole (engine.pipeline.launch:
    unit i to rank i % world); the rest every rank (or rank 0 alone) spends in full."""
    share = -(-units // world) / units if units > 0 else 1.0
    cpu, dev = (float(t) - float(x) * (1.0 - share) for t, x in zip(total, shared))
    return cpu, dev


def launch(ctx: Context, stages: dict[str, dict], parallel: float) -> dict[str, dict]:
    """Each stage's figures on the busiest rank of the launch: ``ranks_busy``, ``cpu_s``, ``gpu_s``
    (CUDA runs) and ``time_s`` (wall seconds) in place of ``time_s``, ``shared_s`` and ``units``.

    CPU seconds become wall time divided by ``parallel``, the parallelism this process got while
    calibrating (2 on an idle 2-core machine running torch; below 1 when others share the cores);
    device seconds on a GPU are wall time as they are, and CPU seconds on a CPU run."""
    p = ctx.plan
    out = {}
    for name, figs in stages.items():
        figs = dict(figs)
        units = int(figs.pop("units", 1))
        cpu, dev = busiest_rank(figs.pop("time_s"), figs.pop("shared_s", seconds()), units, p.world)
        figs["ranks_busy"] = min(p.world, units)
        if not p.on_gpu:
            cpu, dev = cpu + dev, 0.0
        figs["cpu_s"] = cpu
        if p.on_gpu:
            figs["gpu_s"] = dev
        figs["time_s"] = cpu / parallel + dev
        out[name] = figs
    return out
