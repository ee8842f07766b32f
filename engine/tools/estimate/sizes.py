"""Bytes a run writes and holds beyond the per-stage figures' own arithmetic, each in one place:
the stage costs and the summary read the same figure."""
from __future__ import annotations

from engine.tools.estimate.context import Context
from engine.tools.estimate.shape import Plan


def utterances(plan: Plan) -> int:
    """Utterances the speech stage synthesises: every example, identification and held out."""
    return plan.n_id + plan.n_steer


def audio_bytes(ctx: Context) -> int:
    """Bytes of the speech cache: 16 kHz float32 audio of every utterance, and its records."""
    p, n_utt = ctx.plan, utterances(ctx.plan)
    return int(sum(ctx.audio_s[lang] for lang in p.langs) * (n_utt // p.L) * 16000 * 4 + 80 * n_utt)


def store_values(plan: Plan) -> int:
    """Values in the activation store: one speech-encoder matrix serves S2T and ASR; decoder
    matrices per task, step and recorded decoder activity."""
    p = plan
    return p.n_id * (p.n_enc["speech"] + p.n_enc["text"] + 3 * p.S * p.activities * p.n_dec)


def store_bytes(ctx: Context) -> int:
    """Bytes of the activation store on disk, compressed as the store calibration measured (never
    above the raw size)."""
    return int(store_values(ctx.plan) * min(ctx.plan.sb, ctx.cal["store"]["stored_bytes_per_value"]))


def activation_bytes(ctx: Context) -> float:
    """Bytes of the largest encoder activations of one batch (0 when nothing is recorded)."""
    p = ctx.plan
    return p.bs * ctx.max_frames * 4 * p.shape["speech_width"] * p.wbytes * 2 if p.n_id else 0


def ap_bytes(plan: Plan) -> int:
    """Bytes the rank stage writes: AP and its tie-breaker r (float64 each) per task, the ASR
    decoder medians (float32)."""
    p = plan
    return sum(2 * (w * p.L * 8 + 128) for w in p.width.values()) + 2 * p.S * (p.L * p.n_dec * 4 + 128)


def bootstrap_bytes(plan: Plan) -> int:
    """Bytes of the compare stage's bootstrap scratch: two sides x resamples x languages x
    decoder neurons, float32."""
    return 2 * plan.n_boot * plan.L * plan.n_dec * 4


def compare_json_bytes(plan: Plan) -> int:
    """Bytes of the compare stage's JSON results: per step, and per layer of each side."""
    p = plan
    return p.S * (2500 + 60 * p.L * p.L + 40 * len(p.ks)) + (1000 + 10 * p.shape["dec_layers"]) * (2 * p.S + 2)


def steer_calls(plan: Plan) -> dict[str, int]:
    """Generation calls of the steer stage by modality: each source language's unsteered outputs,
    and each pair's steered ones at every recorded step, with the random control when set."""
    pairs = [tuple(pair) for pair in plan.cfg["steer"]["pairs"]]
    sources = len({s for s, t in pairs})
    arms = 1 + (1 if plan.cfg["steer"]["random_control"] else 0)
    return {"speech": sources + len(pairs) * plan.S * arms, "text": sources + len(pairs) * plan.S * arms}


def steer_generations(plan: Plan) -> int:
    """Generations of the steer stage: its calls x held-out sentences per source."""
    return sum(steer_calls(plan).values()) * plan.cfg["data"]["n_steer"]


def steer_rows(plan: Plan) -> int:
    """Rows of the steer stage's results table."""
    arms = 1 + (1 if plan.cfg["steer"]["random_control"] else 0)
    return len(plan.cfg["steer"]["pairs"]) * 2 * (1 + plan.S * arms)
