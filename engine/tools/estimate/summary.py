"""What an estimate returns and prints: the per-stage figures of the launch, run totals, the
assumptions stated and the figures measured, and one printed line each."""
from __future__ import annotations

import json

import numpy as np

from engine.science.crossmodal import permutation_method
from engine.tools.estimate import sizes
from engine.tools.estimate.assumptions import ASSUMED_GPU, ASSUMED_TTS_S
from engine.tools.estimate.context import Context


def size(n: float) -> str:
    """``n`` bytes in B, KiB, MiB, GiB or TiB, one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024


def duration(seconds: float) -> str:
    """``seconds`` in s, min or h, one decimal."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def stated_assumptions(ctx: Context) -> dict:
    """What the estimate assumes rather than measures: the device it measured on, the stated GPU
    (when none is visible), XTTS speed, the audio seconds per sentence, outputs of full length,
    and the launch's shared output root."""
    p = ctx.plan
    return {
        "device": p.device, "measured_on": p.mm_device if not p.gpu_assumed else "cpu (GPU assumed, none visible)",
        "gpu": ASSUMED_GPU if p.gpu_assumed else None,
        "tts_s_per_utterance": None if p.backend == "espeak" else ASSUMED_TTS_S.get(p.backend, 1.0),
        "audio_seconds_per_sentence": {lang: round(v, 2) for lang, v in ctx.audio_s.items()},
        "outputs_run_to_max_new_tokens": True,
        "launch": {"shared_output_root": p.world > 1, "each_rank_its_own_gpu_and_cpu_cores": p.world > 1},
    }


def calibration_figures(ctx: Context, parallel: float) -> dict:
    """The measured figures, rounded, in the units they are printed in: GMAC/s, ms, s, MB/s,
    million values/s, microseconds, MiB; ``parallel`` is the parallelism obtained now."""
    p, cal, mm, gen, st = ctx.plan, ctx.cal, ctx.mm, ctx.gen, ctx.cal["statistics"]
    return {
        **({} if p.gpu_assumed else {
            "matmul_gmac_s": {"encode": round(1e-9 / mm["encode"], 2),
                              **{f"decode_batch_{b}": round(1e-9 / v, 2) for b, v in mm["decode"].items()}},
            "generate_ms_per_step": round(1e3 * gen["step_s"], 3),
            "generate_ms_per_layer_step": round(1e3 * gen["layer_s"], 3)}),
        "recorder_s": {k2: round(v, 4) for k2, v in ctx.rec.items()},
        **({"prompt_tokens": {k2: (round(v, 1) if isinstance(v, float) else v) for k2, v in cal["prompt_tokens"].items()}}
           if "prompt_tokens" in cal else {}),
        "sha256_mb_s": round(1e-6 / cal["sha256_s_per_byte"], 1),
        "store_write_mvalues_s": round(1e-6 / cal["store"]["write_s_per_value"], 2),
        "store_read_mvalues_s": round(1e-6 / cal["store"]["read_s_per_value"], 2),
        "store_bytes_per_value": round(cal["store"]["stored_bytes_per_value"], 3),
        "ap_us_per_neuron": round(1e6 * cal["rank"]["s_per_neuron"], 3),
        "ap_rows": p.n_id,
        "bootstrap_us_per_resample_neuron": round(1e6 * cal["bootstrap"]["s_per_resample_neuron"], 3),
        "resample_statistics_s": {"fixed": round(st["resample"]["fixed_s"], 4),
                                  "per_1k_neurons": round(1e3 * st["resample"]["s_per_neuron"], 5)},
        "espeak_s_per_utterance": None if not ctx.espeak else round(ctx.espeak["s_per_utterance"], 3),
        "stage_process_rss_mib": round(ctx.base_rss / 2**20, 1),
        "preflight_s": round(ctx.preflight_s, 2),
        "parallelism_now": round(parallel, 2),
    }


def lines(ctx: Context, stages: dict[str, dict], calibration: dict) -> list[str]:
    """The printed lines: the run, its neurons and examples, what was measured or assumed, one line
    per stage (``stages`` as ``cost.launch`` returns them), the totals, the launch, and the
    permutation test's method when its matchings cannot be enumerated."""
    p = ctx.plan
    cfg, n_enc, L = p.cfg, p.n_enc, p.L
    total_s, peak, disk_total = _totals(ctx, stages)
    bound = _bound(stages)
    out = [
        f"profile {cfg['profile']['name']}: model {p.source}, {p.n_params:,} parameters ({cfg['model']['dtype']}, "
        f"{size(p.weight_bytes)}) on {p.device}",
        f"neurons: speech encoder {n_enc['speech']:,}, text encoder {n_enc['text']:,}, decoder {p.n_dec:,} "
        f"per step x {p.S} steps; catalog total {p.neurons['total']:,}",
        f"examples: {p.n_id:,} per recorded task (S2T, T2T, ASR: {L} languages x {cfg['data']['n_identify']}), "
        f"{p.n_steer:,} held out; {sizes.steer_generations(p):,} steered generations of <= "
        f"{cfg['steer']['max_new_tokens']} tokens",
        "measured here: " + ", ".join(f"{k2}={v}" for k2, v in calibration.items()),
        ("assumed GPU (none visible): " + json.dumps(ASSUMED_GPU)) if p.gpu_assumed else
        f"costs measured on {p.mm_device}; outputs assumed to run to max_new_tokens (an upper bound)",
    ]
    for name, s in stages.items():
        extra = f", GPU {size(s['gpu_peak_bytes'])}" if "gpu_peak_bytes" in s else ""
        scratch = f" (+{size(s['transient_disk_bytes'])} scratch while running)" if "transient_disk_bytes" in s else ""
        gpu_s = f" + {s['gpu_s']:.0f} GPU s" if "gpu_s" in s else ""
        out.append(f"  {name:8s} time {duration(s['time_s'])} ({s['cpu_s']:.1f} CPU s{gpu_s}), peak RAM "
                   f"{size(s['peak_rss_bytes'])}{extra}, disk {size(s['disk_bytes'])}{scratch}")
    out.append(f"total: ~{duration(total_s)}, peak RAM {size(peak)}{' per rank' if p.world > 1 else ''}, "
               f"disk {size(disk_total)} (activation store {size(sizes.store_bytes(ctx))} of "
               f"{size(sizes.store_values(p) * p.sb)} raw, {p.sdtype})")
    out.append(
        f"launch: {p.nodes} node(s) x {p.gpus_per_node} GPU(s) = {p.world} rank(s)"
        + (", one output root every node mounts, each rank its own GPU and CPU cores" if p.world > 1 else "")
        + f"; the {bound} stage bounds the run ({duration(stages[bound]['time_s'])}, "
        f"{stages[bound]['ranks_busy']} rank(s) busy)")
    permutation = permutation_method(L)
    if permutation["method"] == "monte_carlo":
        out.append(f"permutation test: {L}! matchings cannot be enumerated; Monte Carlo over "
                   f"{permutation['matchings']:,} random matchings (engine.science.crossmodal)")
    return out


def _totals(ctx: Context, stages: dict[str, dict]) -> tuple[float, float, int]:
    """``(wall seconds, peak RSS bytes, disk bytes)`` of the whole run: its stages' times summed,
    the largest stage peak, everything it leaves on disk plus the bootstrap's scratch."""
    total_s = sum(s["time_s"] for s in stages.values())
    peak = max(s["peak_rss_bytes"] for s in stages.values())
    disk_total = sum(s["disk_bytes"] for s in stages.values()) + sizes.bootstrap_bytes(ctx.plan)
    return total_s, peak, disk_total


def _bound(stages: dict[str, dict]) -> str:
    """The stage that takes longest (the first of equals, in stage order)."""
    return max(stages, key=lambda name: stages[name]["time_s"])


def summarize(ctx: Context, stages: dict[str, dict], parallel: float) -> dict:
    """The estimate as JSON-ready data: ``model``, ``parameters``, ``neurons``, ``examples``,
    ``stages`` (``cost.launch``'s figures: bytes as integers, seconds to 3 decimals),
    ``disk_bytes``, ``ram_bytes``, ``compute`` (hours by stage and in total), ``assumptions``,
    ``calibration`` (``calibration_figures``), ``launch`` and the printed ``lines``."""
    p = ctx.plan
    total_s, peak, disk_total = _totals(ctx, stages)
    calibration = calibration_figures(ctx, parallel)
    result = {
        "model": p.source, "parameters": int(p.n_params),
        "neurons": {"speech_encoder": p.n_enc["speech"], "text_encoder": p.n_enc["text"], "text_decoder": p.n_dec,
                    "total": p.neurons["total"]},
        "examples": {"record_per_task": p.n_id, "record_tasks": 3, "forward_passes": 3 * p.n_id,
                     "encoder_passes": 2 * p.n_id, "steering_generations": sizes.steer_generations(p),
                     "held_out": p.n_steer},
        "stages": {name: {key: (int(v) if key.endswith("bytes") else round(float(v), 3))
                          for key, v in figs.items()} for name, figs in stages.items()},
        "disk_bytes": {"activation_store": sizes.store_values(p) * p.sb, "activation_store_compressed": sizes.store_bytes(ctx),
                       "ap_and_medians": sizes.ap_bytes(p), "bootstrap_transient": sizes.bootstrap_bytes(p),
                       "audio_cache": sizes.audio_bytes(ctx), "total": disk_total},
        "ram_bytes": {"record": int(stages["record"]["peak_rss_bytes"]), "rank": int(stages["rank"]["peak_rss_bytes"]),
                      "peak": int(peak)},
        "compute": {"hours": {name: round(s["time_s"] / 3600, 3) for name, s in stages.items()}
                    | {"total": round(total_s / 3600, 3)}},
        "assumptions": stated_assumptions(ctx), "calibration": calibration,
        "launch": {"nodes": p.nodes, "gpus_per_node": p.gpus_per_node, "ranks": p.world, "bounded_by": _bound(stages)},
        "lines": lines(ctx, stages, calibration),
    }
    return json.loads(json.dumps(result, default=lambda o: int(o) if isinstance(o, np.integer) else str(o)))
