"""Scores of the steering experiment, on plain data: the outputs' texts and the rows' numbers.

The experiment itself (generating with and without intervention) is
``engine.pipeline.steering_run``; this module scores what it generated (SPEC §2, paper §5,
Tables 1–4) and takes no model. Every rate is a percentage (0–100).

- ``score_outputs``: one condition's outputs scored by script control rate
  (engine.science.scripts) or, for a same-script pair, by language ID (engine.science.langid),
  with the fastText probability of src and tgt and a bootstrap CI of the control rate.
- ``effect_ratios``: the cross-modal effect ratio CR_TR / CR_ASR per pair and step where
  CR_ASR ≥ τ, its mean per step, and whether it rises from one step to another.
- ``qualitative_rows``: the Table 2 example of a pair and step.
- ``check_held_out``: the steered examples are held out from the identification examples.

Decisions:
- Qualitative examples: for every pair and step, the first held-out sentence (in input order)
  that src has in both ASR and TR; gold is the ASR reference.
- Held-out: every example must have split "steer", and no example id nor sentence id may
  occur among the identification examples; otherwise UserError.
- Control-rate CIs resample outputs, not tokens: tokens of one output are not independent.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np

from engine.errors import UserError
from engine.science import evaluation, langid, scripts
from engine.science.languages import PAPER_PAIRS
from engine.science.scripts import SCRIPT_OF_LANG

#: {German, French} → {Chinese, Japanese} and back: the paper's 8 pairs.
PAIRS = PAPER_PAIRS
SCRIPT = SCRIPT_OF_LANG  # the script a language's output should be in, from the language table
#: Resamples of the control-rate CI (outputs resampled with replacement, seeded).
BOOTSTRAP_N = 1000
#: The steered tasks and the modality of their input, in the order rows are generated and listed.
TASK_MODALITY = {"ASR": "speech", "TR": "text"}
#: "median": tgt's control neurons set to tgt's medians; "random": as many random decoder
#: neurons set to tgt's medians of them (a control the paper lacks); "none": the baseline.
INTERVENTIONS = ("median", "random", "none")


# ---------------------------------------------------------------------------------------------
# Held-out examples


def check_held_out(held_out: Sequence, identify: Sequence) -> None:
    """UserError unless every held-out example has split "steer" and shares neither its
    example id nor its sentence id with any identification example.

    Both sequences hold objects with ``example_id``, ``sentence_id`` and (``held_out``)
    ``split`` attributes, e.g. ``engine.pipeline.inputs.tasks.Example``.
    """
    wrong = sorted({x.example_id for x in held_out if x.split != "steer"})
    if wrong:
        raise UserError(f"steering must run on held-out examples (split 'steer'); "
                        f"{len(wrong)} are not, e.g. '{wrong[0]}'")
    ids = {x.example_id for x in identify}
    sentences = {x.sentence_id for x in identify}
    clash = sorted({x.example_id for x in held_out if x.example_id in ids or x.sentence_id in sentences})
    if clash:
        raise UserError(f"{len(clash)} held-out examples overlap the identification examples, "
                        f"e.g. '{clash[0]}'; rebuild the split so they are disjoint")


# ---------------------------------------------------------------------------------------------
# Scoring


def _json_float(value: float) -> float | None:
    """NaN (no classified token / no output) becomes null so the artifact is strict JSON."""
    value = float(value)
    return None if math.isnan(value) else value


def score_outputs(texts: Sequence[str], src: str, tgt: str, *,
                  fasttext_model: str | None = None, pieces: Callable[[str], list[str]] | None = None,
                  by_pieces: bool = False, target_refs: Sequence[str] | None = None,
                  source_refs: Sequence[str] | None = None) -> dict:
    """Scores of one condition's outputs (all percentages, pooled over ``texts``).

    When src and tgt are written in different scripts: the token shares of both script classes
    (keys named by class: "latin" and "cjk" for the paper's pairs, "cyrillic", "arabic", ...;
    engine.science.scripts.script_shares); control_rate: share of tgt's script; tokens: classified
    tokens. With ``by_pieces`` (``definitions.control_rate = "sentencepiece"``) those shares count
    the model tokenizer's ``pieces`` instead, as the authors did (control_by "pieces";
    engine.science.evaluation.piece_control_rate). When they share a script (German -> French):
    "script" (the shared class), control_rate = the per-segment language-ID rate
    (engine.science.langid.lid_control_rate), with lid_output_rate / lid_segment_rate and
    segments beside it, control_by "langid". Always: ft_src / ft_tgt (mean fastText
    probability), n (outputs), control_rate_ci ([low, high] percent, or None). ``fasttext_model``:
    path of lid.176.bin; None: the bundled lid.176.ftz. Rates are None when nothing could be
    classified.

    And, where given: ``pieces`` -> "code_mixing" (the authors' M- and I-index over the pieces of
    the two scripts, means with intervals; a pair of one script has none); ``target_refs`` (one
    reference per output in tgt) -> "content" (BLEU, chrF++ and 0.6 BLEU + 0.4 chrF++ against
    them, 0-100); ``source_refs`` (the input sentence in src) -> "errors" (WER and CER against
    them, fractions). Each with a 95% interval over sentences.
    """
    texts = list(texts)
    ft = langid.mean_probabilities(texts, [src, tgt], model_path=fasttext_model)
    common = {"ft_src": _json_float(ft[src]), "ft_tgt": _json_float(ft[tgt]), "n": len(texts),
              **_evaluation(texts, src, tgt, pieces, target_refs, source_refs)}
    a, b = scripts.pair_scripts(src, tgt)
    if a == b:
        lid = langid.lid_control_rate(texts, src, tgt, model_path=fasttext_model)
        counts = np.array([[o["segments_tgt"], o["segments"]] for o in lid["per_output"]],
                          dtype=np.int64).reshape(-1, 2)
        return {"script": a, "control_by": "langid", "control_rate": _json_float(lid["segment"]),
                "control_rate_ci": _bootstrap_ci(counts), "lid_segment_rate": _json_float(lid["segment"]),
                "lid_output_rate": _json_float(lid["output"]), "segments": lid["segments"], **common}
    if by_pieces:
        if pieces is None:
            raise UserError("the control rate by pieces needs the model tokenizer's pieces")
        rate = evaluation.piece_control_rate(texts, pieces, b, source=a, n_boot=BOOTSTRAP_N)
        share = _json_float(rate["value"])
        return {a: None if share is None else 100.0 - share, b: share, "control_by": "pieces",
                "control_rate": share, "control_rate_ci": rate["ci"], "pieces": rate["pieces"], **common}
    shares = scripts.script_shares(texts, (a, b))
    return {a: _json_float(shares[a]), b: _json_float(shares[b]),
            "control_rate": _json_float(shares[b]),
            "control_rate_ci": control_rate_ci(texts, b, source=a),
            "tokens": int(shares["tokens"]), **common}


def _evaluation(texts: list[str], src: str, tgt: str, pieces, target_refs, source_refs) -> dict:
    """The content, error and code-mixing scores ``score_outputs`` adds where it is given what they need."""
    out = {}
    if pieces is not None and not scripts.same_script(src, tgt):
        out["code_mixing"] = _finite(evaluation.code_mixing(texts, pieces, scripts.pair_scripts(src, tgt),
                                                            n_boot=BOOTSTRAP_N))
    if target_refs is not None:
        out["content"] = _finite(evaluation.translation_scores(texts, target_refs, target_lang=tgt, n_boot=BOOTSTRAP_N))
    if source_refs is not None:
        out["errors"] = {"wer": _finite(evaluation.wer(source_refs, texts, n_boot=BOOTSTRAP_N)),
                         "cer": _finite(evaluation.cer(source_refs, texts, n_boot=BOOTSTRAP_N))}
    return out


def _finite(obj):
    """``obj`` with NaN floats as None (strict JSON in the artifacts)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def control_rate_ci(texts: Sequence[str], script: str, *, source: str | None = None,
                    n_boot: int = BOOTSTRAP_N, seed: int = 0, alpha: float = 0.05) -> list | None:
    """Percentile bootstrap CI (percent) of the pooled control rate, resampling outputs.

    ``script``: the target's script class (or language); ``source``: the other class (default:
    the paper's Latin/CJK counterpart). Tokens stay pooled inside each resample, exactly as
    ``engine.science.scripts.control_rate`` pools them. Returns [low, high], the
    ``alpha / 2`` and ``1 - alpha / 2`` percentiles of ``n_boot`` resamples drawn with ``seed``;
    None when no output has a classified token; resamples without one are dropped.
    """
    texts = list(texts)
    if not texts:
        return None
    target = scripts.pair_scripts(script, script)[0]
    other = (scripts.CJK if target == scripts.LATIN else scripts.LATIN) if source is None else source
    counts = np.array([[sum(tok == target for tok in toks), len(toks)]
                       for toks in (scripts.classify_tokens(t, (other, target)) for t in texts)],
                      dtype=np.int64)
    return _bootstrap_ci(counts, n_boot=n_boot, seed=seed, alpha=alpha)


def _bootstrap_ci(counts: np.ndarray, *, n_boot: int = BOOTSTRAP_N, seed: int = 0,
                  alpha: float = 0.05) -> list | None:
    """Percentile CI of ``100 * sum(hits) / sum(units)`` over outputs resampled with replacement.

    ``counts``: int [n_outputs, 2] of (hits, units) per output. Returns [low, high] percent;
    None when there are no units.
    """
    if counts.shape[0] == 0 or counts[:, 1].sum() == 0:
        return None
    n = counts.shape[0]
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    hits, total = counts[idx, 0].sum(axis=1), counts[idx, 1].sum(axis=1)
    rates = 100.0 * hits[total > 0] / total[total > 0]
    lo, hi = np.percentile(rates, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return [float(lo), float(hi)]


# ---------------------------------------------------------------------------------------------
# Effect ratio and qualitative examples


def effect_ratios(rows: Sequence[Mapping], *, tau: float = 10.0,
                  direction: tuple[int, int] = (6, 11)) -> dict:
    """The "effect_ratio" section from the median-intervention rows.

    ``rows``: the section's rows (keys src, tgt, task, step, intervention, control_rate in
    percent or None); other interventions are ignored. Every (src, tgt, step) with both an ASR
    and a TR "median" row becomes a pair scored by ``engine.science.scripts.mean_effect_ratio``
    (ratio CR_TR / CR_ASR, None and listed under "excluded" when CR_ASR < ``tau`` percent;
    "mean" per step over valid pairs, None without any). A pair whose ASR or TR control rate is
    None (no classified token in any output) is excluded too, with
    ``"reason": "no classified token"``. Pairs are sorted by (step, src, tgt), "mean" by step.
    Added: "direction", per pair, the ratios at ``direction[0]`` and ``direction[1]`` and
    whether it rises (None when either is missing or excluded).
    """
    cr = {}
    for row in rows:
        if row["intervention"] == "median":
            cr[(row["src"], row["tgt"], row["step"], row["task"])] = row["control_rate"]
    keys = sorted({(src, tgt, step) for (src, tgt, step, task) in cr
                   if (src, tgt, step, "ASR") in cr and (src, tgt, step, "TR") in cr},
                  key=lambda k: (k[2], k[0], k[1]))
    scored, unscorable = [], []
    for src, tgt, step in keys:
        pair = {"src": src, "tgt": tgt, "step": step, "cr_asr": cr[(src, tgt, step, "ASR")],
                "cr_tr": cr[(src, tgt, step, "TR")]}
        (unscorable if pair["cr_asr"] is None or pair["cr_tr"] is None else scored).append(pair)
    block = scripts.mean_effect_ratio(scored, tau=tau)
    block["tau"] = float(tau)
    for pair in unscorable:
        block["pairs"].append({**pair, "ratio": None, "excluded": True, "reason": "no classified token"})
        block["excluded"].append({"src": pair["src"], "tgt": pair["tgt"], "step": pair["step"],
                                  "cr_asr": pair["cr_asr"], "reason": "no classified token"})
        block["mean"].setdefault(str(pair["step"]), None)
        block["n_valid"].setdefault(str(pair["step"]), 0)
    block["pairs"].sort(key=lambda p: (p["step"], p["src"], p["tgt"]))
    block["mean"] = {s: block["mean"][s] for s in sorted(block["mean"], key=int)}
    by_key = {(p["src"], p["tgt"], p["step"]): p["ratio"] for p in block["pairs"]}
    a, b = direction
    block["direction"] = []
    for src, tgt in sorted({(p["src"], p["tgt"]) for p in block["pairs"]}):
        ra, rb = by_key.get((src, tgt, a)), by_key.get((src, tgt, b))
        block["direction"].append({"src": src, "tgt": tgt, "from": a, "to": b, "ratio_from": ra,
                                   "ratio_to": rb, "rising": None if ra is None or rb is None else bool(rb > ra)})
    return block


def qualitative_rows(src: str, tgt: str, step: int, asr_examples: Sequence,
                     outputs: Mapping[str, Sequence[Mapping]]) -> list[dict]:
    """The Table 2 example of one pair and step: ``[]`` or one row.

    ``asr_examples``: src's held-out ASR examples in input order (``sentence_id``, ``reference``);
    ``outputs["ASR"]`` / ``outputs["TR"]``: the steered outputs of src's ASR and TR examples
    (``sentence_id``, ``text``), ASR's aligned with ``asr_examples``. The row is the first ASR
    example whose sentence src also has in TR: src, tgt, step, sentence_id, gold (its
    reference), asr and tr (the steered texts).
    """
    tr_by_sentence = {o["sentence_id"]: o["text"] for o in outputs["TR"]}
    for example, out in zip(asr_examples, outputs["ASR"]):
        if example.sentence_id in tr_by_sentence:
            return [{"src": src, "tgt": tgt, "step": step, "sentence_id": example.sentence_id,
                     "gold": example.reference, "asr": out["text"],
                     "tr": tr_by_sentence[example.sentence_id]}]
    return []
