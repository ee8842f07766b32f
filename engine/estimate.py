"""What a run will need, computed from the neuron catalog before anything runs.

Disk and RAM figures are upper bounds from array sizes (activations are stored uncompressed
size at most; zstd usually saves little on fp16 activations). The model is built on the meta
device, so the Large model's figures need no weights and no network.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine import config as config_mod

#: Sustained inference throughput assumed for the time figure (A100-class GPU, bf16, small
#: batches with greedy decoding); CPU runs are far slower. A rough guide, stated as such.
ASSUMED_TFLOPS = {"cuda": 20.0, "cpu": 0.2}
#: Greedy decoding is latency-bound: seconds per decoding step of one batch for the Large
#: decoder (24 layers + 256k-token output layer, LARGE_DECODER_PARAMS); smaller decoders scale
#: by parameter count, down to 10 ms (framework overhead of one step).
ASSUMED_STEP_S = {"cuda": 0.025, "cpu": 0.3}
LARGE_DECODER_PARAMS = 6.05e8  # text_decoder + lm_head of SeamlessM4Tv2Config()
#: Seconds per (neuron, example) of exact AP ranking: measured by `bench ap` on this 2-core CPU
#: (5,000 x 20,480 fp16 in 2.3 s); a GPU is assumed 20x faster.
RANK_S_PER_CELL = {"cpu": 2.3 / (5000 * 20480), "cuda": 2.3 / (5000 * 20480) / 20}
#: Seconds to synthesise one utterance (XTTS v2 on a GPU; espeak-ng is about 0.01 s).
ASSUMED_TTS_S = {"xtts": 1.0, "espeak": 0.02, "natural": 0.0}
TEXT_TOKENS = 40  # generous length of an input sentence in tokens
AUDIO_SECONDS = {"fleurs": 12.0, "embedded": 4.0}  # generous per-sentence durations of the two sources
BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024


def _dur(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _model_config(cfg: dict):
    from transformers import SeamlessM4Tv2Config

    path = Path(config_mod.model_path(cfg))
    if (path / "config.json").exists():
        return SeamlessM4Tv2Config.from_pretrained(path), str(path)
    if cfg["model"]["id"] == "facebook/seamless-m4t-v2-large":
        return SeamlessM4Tv2Config(), "SeamlessM4Tv2Config() (the Large architecture, meta device)"
    return None, cfg["model"]["id"]


def estimate(cfg: dict) -> dict:
    import torch
    from transformers import SeamlessM4Tv2Model
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the meta build warns about layer_idx, irrelevant here

    from engine.catalog import build_catalog
    from engine.steering_eval import PAIRS

    mcfg, source = _model_config(cfg)
    if mcfg is None:
        from engine.errors import UserError

        raise UserError(f"cannot estimate for model '{cfg['model']['id']}' without its config; "
                        "set model.id to a local directory holding config.json")
    with torch.device("meta"):
        model = SeamlessM4Tv2Model(mcfg)
    cat = build_catalog(model)
    n_params = sum(p.numel() for p in model.parameters())
    langs, steps = cfg["data"]["langs"], cfg["record"]["steps"]
    L, S = len(langs), len(steps)
    n_id, n_steer = cfg["data"]["n_identify"] * L, cfg["data"]["n_steer"] * L
    n_dec = cat.n_neurons("text_decoder")
    n_enc = {"speech": cat.n_neurons("speech_encoder"), "text": cat.n_neurons("text_encoder")}
    width = {"S2T": n_enc["speech"] + S * n_dec, "T2T": n_enc["text"] + S * n_dec, "ASR": n_enc["speech"] + S * n_dec}
    sb = BYTES[cfg["record"]["store_dtype"]]
    store_bytes = sum(n_id * w * sb for w in width.values())
    ap_bytes = sum(w * L * 8 for w in width.values()) + 2 * S * L * n_dec * 4  # + ASR medians
    boot_bytes = 2 * cfg["rank"]["n_boot"] * L * n_dec * 4
    audio_bytes = int((cfg["data"]["n_identify"] + cfg["data"]["n_steer"]) * L * AUDIO_SECONDS[cfg["data"]["source"]] * 16000 * 4)
    wbytes = BYTES.get(cfg["model"]["dtype"], 4)
    bs, rpb = cfg["model"]["batch_size"], cfg["record"]["rows_per_block"]
    widest = max(width.values())
    ram_record = n_params * wbytes + (bs + rpb) * widest * 4
    ram_rank = n_id // 3 * 8192 * 4 * 6  # one neuron chunk of one task: scores, sort, cumsums
    n_pairs = len(PAIRS)
    arms = 1 + (1 if cfg["steer"]["random_control"] else 0)
    steer_generations = (n_pairs * 2 * S * arms + 2 * 4) * cfg["data"]["n_steer"]
    def params(prefix):
        return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))

    p_speech, p_text, p_dec = params("speech_encoder"), params("text_encoder"), params("text_decoder") + params("lm_head")
    frames = AUDIO_SECONDS[cfg["data"]["source"]] * 50  # fbank frames stacked to 20 ms
    out_tok = cfg["record"]["max_new_tokens"]
    enc_flops = {"speech": 2 * p_speech * frames, "text": 2 * p_text * TEXT_TOKENS}
    record_flops = n_id * (2 * enc_flops["speech"] + enc_flops["text"] + 3 * 2 * 2 * p_dec * out_tok)
    steer_flops = steer_generations * ((enc_flops["speech"] + enc_flops["text"]) / 2
                                       + 2 * p_dec * cfg["steer"]["max_new_tokens"])
    dev = "cuda" if cfg["model"]["device"].startswith("cuda") else "cpu"
    tflops = ASSUMED_TFLOPS[dev]
    batches_rec, batches_steer = 3 * -(-n_id // bs), -(-steer_generations // bs)
    step_s = max(0.01, ASSUMED_STEP_S[dev] * min(1.0, p_dec / LARGE_DECODER_PARAMS))
    decode_s = step_s * (batches_rec * out_tok + batches_steer * cfg["steer"]["max_new_tokens"])
    tts_s = ASSUMED_TTS_S[cfg["speech"]["backend"]] * (n_id + n_steer)
    flop_s = (record_flops + steer_flops) / (tflops * 1e12)
    cells = sum(width.values()) * n_id + cfg["rank"]["n_boot"] * 2 * S * n_dec * n_id
    rank_s = RANK_S_PER_CELL[dev] * cells
    hours = (flop_s + decode_s + tts_s + rank_s) / 3600
    result = {
        "compute": {"record_tflop": round(record_flops / 1e12, 1), "steer_tflop": round(steer_flops / 1e12, 1),
                    "assumed_tflops": tflops, "assumed_step_s": step_s,
                    "assumed_tts_s": ASSUMED_TTS_S[cfg["speech"]["backend"]],
                    "hours": {"compute": round(flop_s / 3600, 2), "decoding": round(decode_s / 3600, 2),
                              "speech": round(tts_s / 3600, 2), "ranking": round(rank_s / 3600, 2),
                              "total": round(hours, 2)}},
        "model": source, "parameters": int(n_params),
        "neurons": {"speech_encoder": n_enc["speech"], "text_encoder": n_enc["text"], "text_decoder": n_dec,
                    "total": cat.total},
        "examples": {"record_per_task": n_id, "record_tasks": 3, "forward_passes": 3 * n_id,
                     "steering_generations": steer_generations, "held_out": n_steer},
        "disk_bytes": {"activation_store": store_bytes, "ap_and_medians": ap_bytes, "bootstrap_transient": boot_bytes,
                       "audio_cache": audio_bytes, "total": store_bytes + ap_bytes + boot_bytes + audio_bytes},
        "ram_bytes": {"record": ram_record, "rank": ram_rank, "peak": max(ram_record, ram_rank)},
    }
    result["lines"] = [
        f"profile {cfg['profile']['name']}: model {source}, {n_params:,} parameters ({cfg['model']['dtype']})",
        f"neurons: speech encoder {n_enc['speech']:,}, text encoder {n_enc['text']:,}, decoder {n_dec:,} "
        f"per step x {S} steps; catalog total {cat.total:,}",
        f"examples: {n_id:,} per recorded task (S2T, T2T, ASR: {L} languages x {cfg['data']['n_identify']}), "
        f"{n_steer:,} held out; {steer_generations:,} steered generations",
        f"disk: activation store <= {_size(store_bytes)} ({cfg['record']['store_dtype']}), AP + medians "
        f"{_size(ap_bytes)}, bootstrap scratch {_size(boot_bytes)}, audio {_size(audio_bytes)}; "
        f"total {_size(result['disk_bytes']['total'])}",
        f"RAM: recording ~{_size(ram_record)} (weights + batch and block buffers; GPU memory for the "
        f"weights when on {cfg['model']['device']}), ranking ~{_size(ram_rank)} per neuron chunk",
        f"time: ~{_dur(hours * 3600)} = compute {_dur(flop_s)} ({(record_flops + steer_flops) / 1e15:.2g} PFLOP at "
        f"an assumed {tflops:g} TFLOP/s) + greedy decoding {_dur(decode_s)} (assumed "
        f"{step_s:.3g} s per batch step on {dev}) + speech {_dur(tts_s)} "
        f"({cfg['speech']['backend']}) + ranking with {cfg['rank']['n_boot']} bootstrap resamples "
        f"{_dur(rank_s)} (AP throughput of `bench ap` on 2 CPU cores{', assumed 20x on a GPU' if dev == 'cuda' else ''})",
    ]
    return json.loads(json.dumps(result, default=lambda o: int(o) if isinstance(o, np.integer) else str(o)))


def estimate_arguments(parser) -> None:
    config_mod.profile_arguments(parser)


def estimate_command(args) -> int:
    cfg = config_mod.load_profile(args.profile, args.overrides)
    result = estimate(cfg)
    for line in result.pop("lines"):
        print(line)
    print(json.dumps(result, sort_keys=True))
    return 0
