"""The report stage: analysis.json, everything the claims suite judges, from compare and steer."""
from __future__ import annotations

import json

import numpy as np

from engine.files import atomic_write_json
from engine.model.loader import read_config
from engine.pipeline import config as config_mod
from engine.pipeline.run import RECORD_TASKS, Run, load_ap
from engine.pipeline.stages import STAGES
from engine.science.ranking import cut_ties


def stage_report(run: Run, wall_time_s: float = 0.0) -> None:
    compare = json.loads((run.dir("compare") / "compare.json").read_text())
    steering = json.loads((run.dir("steer") / "steering.json").read_text())
    excluded = {task: json.loads((run.dir("rank") / task / "excluded.json").read_text()) for task in RECORD_TASKS}
    recorded = {task: json.loads((run.dir("record") / task / "meta.json").read_text()) for task in RECORD_TASKS}
    analysis = {
        "meta": {"profile": run.cfg["profile"]["name"], "model_id": run.cfg["model"]["id"],
                 "model_type": read_config(config_mod.model_path(run.cfg), run.cfg["model"]["revision"] or None).model_type,
                 "revision": run.weights_revision(), "data": run.cfg["data"]["source"],
                 "speech_backend": run.cfg["speech"]["backend"], "versions": run.versions,
                 "k": run.cfg["rank"]["k"], "steps": run.cfg["record"]["steps"], "langs": run.cfg["data"]["langs"],
                 "n_identify": run.cfg["data"]["n_identify"], "n_steer": run.cfg["data"]["n_steer"],
                 "seeds": {s: run.cfg[s]["seed"] for s in ("data", "rank", "steer") if "seed" in run.cfg[s]},
                 "stage_keys": {s: run.key(s) for s in STAGES},
                 # where the paper's text and its authors' code differ, which this run computed
                 "definitions": dict(run.cfg["definitions"]),
                 **({"long_speech": {task: meta["long_speech"] for task, meta in recorded.items() if "long_speech" in meta}}
                    if any("long_speech" in meta for meta in recorded.values()) else {})},
        **compare,
        "steering": steering,
        "excluded": excluded,
        "step_tokens": {task: step_token_summary(meta.get("step_tokens") or {}) for task, meta in recorded.items()},
        # the tie group at every top-k / bottom-k cut the compare and steer stages took
        "ties": [rec for task in RECORD_TASKS
                 for name in ["encoder", *(f"decoder_t{t}" for t in run.cfg["record"]["steps"])]
                 for rec in tie_records(task, name, load_ap(run, task, name), run.cfg["data"]["langs"],
                                        {"rank": run.cfg["rank"]["k"], "steer": run.cfg["steer"]["k"]})],
    }
    atomic_write_json(run.dir("report") / "analysis.json", analysis)
    # wall time differs between identical runs: kept out of analysis.json so that file is reproducible
    atomic_write_json(run.dir("report") / "timing.json", {"wall_time_s": round(wall_time_s, 1)})
    run.complete("report", volatile=("timing.json",))


def step_token_summary(step_tokens: dict[str, list], top: int = 5) -> dict[str, dict]:
    """Per step: ``n`` examples whose output reached it, and the ``top`` most frequent tokens
    there as ``[token, count]``, most frequent first (ties in first-seen order). Empty when the
    record stage predates ``step_tokens``."""
    from collections import Counter

    out = {}
    for t, tokens in step_tokens.items():
        seen = [tok for tok in tokens if tok is not None]
        out[t] = {"n": len(seen), "top": [[tok, c] for tok, c in Counter(seen).most_common(top)]}
    return out


def tie_records(task: str, name: str, ap: np.ndarray, langs: list[str], cuts: dict[str, int]) -> list[dict]:
    """The tie group at every top-k / bottom-k cut of one AP matrix ``[L, N]`` (``ranking.cut_ties``).

    One record per (language, side, k): ``task``, ``matrix`` (e.g. "decoder_t1"), ``step`` (None
    for encoders), ``lang``, ``side``, ``for`` (which stage takes that cut), and the counts
    ``k, value, tied, above, taken``. ``taken < tied`` means the secondary key (point-biserial
    r) decided which tied neurons made the cut. Only the cuts later stages take are recorded:
    top-k at rank.k of S2T and T2T (compare: overlaps, k sweep, distributions) and top-k and
    bottom-k at steer.k of the ASR decoder (steering's control neurons). Computed here, from the
    saved AP, because this stage's key covers both rank.k and steer.k.
    """
    step = int(name.removeprefix("decoder_t")) if name.startswith("decoder_t") else None
    if task == "ASR":
        wanted = [("top", "steer", cuts["steer"]), ("bottom", "steer", cuts["steer"])] if step is not None else []
    else:
        wanted = [("top", "rank", cuts["rank"])]
    records = []
    for li, lang in enumerate(langs):
        seen = set()
        for side, use, k in wanted:
            k = min(int(k), ap.shape[1])
            if (side, k) in seen:  # rank.k == steer.k: one record serves both
                continue
            seen.add((side, k))
            uses = sorted({u for s, u, kk in wanted if s == side and min(int(kk), ap.shape[1]) == k})
            records.append({"task": task, "matrix": name, "step": step, "lang": lang, "side": side,
                            "for": uses, **cut_ties(ap[li], k, side)})
    return records
