"""The report's tables: the paper's steering tables with our numbers beside them (Tables 1, 3
and 4, each pair by its own control metric), the qualitative examples (Table 2), and what the
run excluded, tied and predicted at each step."""
from __future__ import annotations

import json
from typing import Mapping

import numpy as np

from engine.outputs.glance import NA, finite
from engine.science.languages import table_name
from engine.science.scripts import pair_scripts

#: Marks a measured cell farther from the paper's than the claim's tolerance (T1, T3, T4).
MISS = "✗"


NOT_STEERED = "not steered here"


def fmt(x, nd=2) -> str:
    if x is None:
        return NA
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    return NA if not np.isfinite(xf) else f"{xf:.{nd}f}"


def _cell(measured, paper, tol, nd=1) -> tuple[str, bool | None]:
    """"measured (paper)" with MISS when they differ by more than ``tol``; and whether within."""
    if paper is None:
        return fmt(measured, nd), None
    m = finite(measured)
    within = m is not None and abs(m - float(paper)) <= tol
    return f"{fmt(measured, nd)} ({fmt(paper, nd)})" + ("" if within else f" {MISS}"), within


def _script_label(cls: str) -> str:
    return cls.upper() if cls in ("cjk",) else cls.capitalize()


def _metric_of(src: str, tgt: str, rows: list[dict]) -> tuple[str, tuple[str, str] | None]:
    """How a pair's control was measured: ("script: Latin → CJK", (a, b)) or ("language ID", None)."""
    if any(r.get("control_by") == "langid" for r in rows):
        return "language ID", None
    try:
        a, b = pair_scripts(src, tgt)
    except Exception:  # a code outside the script table: the rows still carry control_rate
        return "control rate", None
    if a == b:
        return "language ID", None
    return f"script: {_script_label(a)} → {_script_label(b)}", (a, b)


def _row_keys(paper_cells, run_rows, with_task=True) -> list[tuple]:
    keys = [(c["src"], c["task"], c["tgt"]) if with_task else (c["src"], c["tgt"]) for c in paper_cells]
    keys += [(r["src"], r["task"], r["tgt"]) if with_task else (r["src"], r["tgt"]) for r in run_rows]
    return list(dict.fromkeys(keys))


def steering_tables(analysis: dict | None, registry: dict) -> list[dict]:
    """Tables 1, 3 and 4: every cell "measured (paper)", MISS where beyond the claim's tolerance.

    Returns ``[{"name", "title", "header", "rows", "within", "total"}]``: ``within`` / ``total``
    count the paper's cells (all of a cell's values within tolerance), as T1, T3 and T4 judge
    them. Table 1's columns follow each pair's own control metric: the shares of its two
    script classes, or the language-ID rate for a same-script pair.
    """
    claims = registry["claims"]
    steps = [int(t) for t in ((analysis or {}).get("meta", {}).get("steps") or (1, 6, 11))]
    rows = [r for r in (analysis or {}).get("steering", {}).get("rows", [])
            if r.get("intervention", "median") == "median" and r.get("step") is not None]
    by = {(r["src"], r["task"], r["tgt"], int(r["step"])): r for r in rows}
    cfg_pairs = ((analysis or {}).get("steering") or {}).get("config", {}).get("pairs")
    steered = {tuple(p) for p in cfg_pairs} if cfg_pairs else {(r["src"], r["tgt"]) for r in rows}
    out = []

    def grid(name, title, cells, cols, tol, labels):
        paper = {(c["src"], c["task"], c["tgt"], int(c["step"])): c for c in cells}
        header = ["source", "task", "target", "measured by"] + [f"t={t} {lab}" for t in steps for lab in labels]
        body, within = [], 0
        for src, task, tgt in _row_keys(cells, rows):
            metric, classes = _metric_of(src, tgt, [r for r in rows if (r["src"], r["tgt"]) == (src, tgt)])
            line = [table_name(src), task, table_name(tgt), metric if cols is None else "fastText"]
            if (src, tgt) not in steered:  # the paper's pair, not steered here: its cells are not applicable
                line[3] = NOT_STEERED
                for t in steps:
                    c = paper.get((src, task, tgt, t)) or {}
                    line += [f"– ({fmt(c.get(k), 1)})" if k in c else "–" for k in (cols or ("latin", "cjk"))]
                body.append(line)
                continue
            for t in steps:
                r, c = by.get((src, task, tgt, t), {}), paper.get((src, task, tgt, t))
                if cols is None:  # Table 1: the pair's own metric
                    if classes is None:
                        keys = [(None, None), ("control_rate", None)]
                    else:
                        keys = [(classes[0], classes[0]), (classes[1], classes[1])]
                else:
                    keys = [(k, k) for k in cols]
                oks = []
                for mk, pk in keys:
                    if mk is None:
                        line.append("–")
                        continue
                    text, ok = _cell(r.get(mk), None if c is None or pk is None else c.get(pk), tol)
                    line.append(text)
                    oks.append(ok)
                if c is not None and oks and all(oks):
                    within += 1
            body.append(line)
        out.append({"name": name, "title": title, "header": header, "rows": body, "within": within,
                    "total": sum((c["src"], c["tgt"]) in steered for c in cells)})

    t1, t4 = claims["T1"], claims["T4"]
    grid("control_rate", "Table 1: control rate (%) per pair, task and step: measured (paper)", t1["paper"]["cells"],
         None, t1["tolerance"]["abs"], ("source", "target"))
    # Table 3
    t3 = claims["T3"]
    tr, tq = t3["tolerance"]["abs_rate"], t3["tolerance"]["abs_ratio"]
    pairs = (analysis or {}).get("steering", {}).get("effect_ratio", {}).get("pairs", [])
    by_pair = {(p["src"], p["tgt"], int(p["step"])): p for p in pairs}
    paper3 = {(c["src"], c["tgt"], int(c["step"])): c for c in t3["paper"]["cells"]}
    keys = list(dict.fromkeys(list(paper3) + list(by_pair)))
    body, within = [], 0
    for key in keys:
        p, c = by_pair.get(key, {}), paper3.get(key)
        if key[:2] not in steered:
            body.append([table_name(key[0]), table_name(key[1]), str(key[2])]
                        + [f"– ({fmt(c[k], 1 if k != 'ratio' else 2)})" for k in ("cr_asr", "cr_tr", "ratio")])
            continue
        cells = [_cell(p.get("cr_asr"), c and c["cr_asr"], tr), _cell(p.get("cr_tr"), c and c["cr_tr"], tr),
                 _cell(p.get("ratio"), c and c["ratio"], tq, nd=2)]
        within += bool(c is not None and all(ok for _, ok in cells))
        body.append([table_name(key[0]), table_name(key[1]), str(key[2])]
                    + [text for text, _ in cells])
    means = (analysis or {}).get("steering", {}).get("effect_ratio", {}).get("mean", {})
    for t, pv in claims["S5"]["paper"]["mean"].items():
        body.append(["mean over valid pairs", "", t, "", "", _cell(means.get(t), pv, claims["S5"]["tolerance"]["abs"], 2)[0]])
    out.append({"name": "effect_ratio", "title": "Table 3: cross-modal effect ratio: measured (paper)",
                "header": ["source", "target", "step", "ASR control (%)", "TR control (%)", "ratio TR / ASR"],
                "rows": body, "within": within,
                "total": sum((c["src"], c["tgt"]) in steered for c in t3["paper"]["cells"])})
    grid("fasttext", "Table 4: fastText probability (%): measured (paper)", t4["paper"]["cells"],
         ("ft_src", "ft_tgt"), t4["tolerance"]["abs"], ("P(source)", "P(target)"))
    return out


def excluded_table(analysis: dict | None) -> tuple[list[str], list[list[str]]]:
    """Examples excluded from a step's ranking because their output ended before it."""
    rows = []
    for task, by_step in sorted(((analysis or {}).get("excluded") or {}).items()):
        for t in sorted(by_step, key=int):
            rows.append([task, t] + [f"{lang}={n}" for lang, n in by_step[t].items()])
    width = max((len(r) for r in rows), default=2)
    return ["task", "step"] + ["excluded"] * (width - 2), [r + [""] * (width - len(r)) for r in rows]


STEP_TOKENS_NOTE = ("Each cell: the tokens predicted at the step's position (the t-th output token) most "
                    "often, with how many of the examples that reached the step produced each. On "
                    "SeamlessM4T step 1 follows the language tag; on a speech LLM it follows the prompt, so a "
                    "preamble (\"Sure\", \"Here\") at step 1 means the steps read the preamble, not the answer.")


def step_tokens_table(analysis: dict | None) -> tuple[list[str], list[list[str]]]:
    """Per task and recorded step: the most frequent output tokens there (engine.pipeline.stages.report.step_token_summary)."""
    rows = []
    for task, by_step in sorted(((analysis or {}).get("step_tokens") or {}).items()):
        for t in sorted(by_step, key=int):
            s = by_step[t]
            tops = ", ".join(f"{json.dumps(tok, ensure_ascii=False)} {c}" for tok, c in s["top"])
            rows.append([task, t, str(s["n"]), tops or "none reached it"])
    return ["task", "step", "examples", "most frequent tokens (count)"], rows


def excluded_summary(analysis: dict | None) -> str:
    """One sentence: how many examples each step lost because their output ended before it."""
    parts = []
    for task, by_step in sorted(((analysis or {}).get("excluded") or {}).items()):
        for t in sorted(by_step, key=int):
            n = {lang: c for lang, c in by_step[t].items() if c}
            if n:
                parts.append(f"{task} t={t}: " + ", ".join(f"{lang} {c}" for lang, c in n.items()))
    if not (analysis or {}).get("excluded"):
        return "not recorded in this artifact"
    return ("none: every output reached every recorded step" if not parts else
            "; ".join(parts) + " (outputs that ended before the step; the step's ranking leaves them out)")


TIES_NOTE = ("Each cell: neurons whose AP equals the AP at the cut (tied) and how many of them the set "
             "took. \u2020 marks a cut inside a tie group (taken < tied): the secondary key, the "
             "point-biserial r of activation and language, decided which tied neurons made the cut.")


def ties_table(analysis: dict | None) -> tuple[list[str], list[list[str]]]:
    """The tie group at every top-k / bottom-k cut (``analysis["ties"]``), one row per cut."""
    records = (analysis or {}).get("ties") or []
    langs = list(dict.fromkeys(r["lang"] for r in records))
    cuts: dict[tuple, dict] = {}
    for r in records:
        key = (r["task"], r["matrix"], r["side"], r["k"], "+".join(r.get("for", [])))
        cuts.setdefault(key, {})[r["lang"]] = r
    rows = []
    for key, by_lang in cuts.items():
        cells = []
        for lang in langs:
            r = by_lang.get(lang)
            if r is None or not r["k"]:
                cells.append("")
                continue
            mark = " \u2020" if r["taken"] < r["tied"] else ""
            cells.append(f"{r['tied']} tied, took {r['taken']} (AP {fmt(r['value'], 3)}){mark}")
        rows.append([str(v) for v in key] + cells)
    return ["task", "matrix", "side", "k", "for"] + langs, rows


def ties_summary(analysis: dict | None) -> str:
    """One sentence: how many top-k / bottom-k cuts fall inside a group of equal AP."""
    records = (analysis or {}).get("ties")
    if not records:
        return "not recorded in this artifact"
    inside = [r for r in records if r["k"] and r["taken"] < r["tied"]]
    return (f"{len(inside)} of {len(records)} cuts fall inside a group of equal AP"
            + (" (the point-biserial r decided which tied neurons made the cut)" if inside else ""))


def qualitative_table(analysis: dict | None) -> tuple[list[str], list[list[str]]]:
    """Table 2-style examples: gold, steered ASR output, steered TR output."""
    rows = []
    for q in (analysis or {}).get("steering", {}).get("qualitative", []):
        rows.append([f"{q.get('src')}→{q.get('tgt')}", str(q.get("step")), q.get("gold", ""), q.get("asr", ""), q.get("tr", "")])
    return ["pair", "step", "gold", "ASR (steered)", "text repetition (steered)"], rows


CONTENT_NOTE = ("Content kept beside language changed (paper Table 2 states it qualitatively): each steered "
                "output against the same sentence in the target language (chrF++ and BLEU, 0-100; BLEU's "
                "tokenizer follows the target language), with the control rate beside it; unsteered outputs "
                "against their input sentence (WER and CER, fractions, after lower-casing as the authors did). "
                "Brackets: 95% intervals over sentences.")


def _scored(d: Mapping | None, digits: int = 1) -> str:
    """``value [lo, hi]`` of one score dict (``{"value", "ci"}``), "n/a" without a value."""
    v = finite((d or {}).get("value"))
    if v is None:
        return NA
    ci = (d or {}).get("ci")
    band = f" [{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]" if ci and None not in ci else ""
    return f"{fmt(v, digits)}{band}"


def content_table(analysis: dict | None) -> tuple[list[str], list[list[str]]]:
    """Per steered row (median intervention): pair, step, task, control rate, chrF++ and BLEU against
    the target-language sentence; then per unsteered row: its WER and CER against the input. Rows
    written before these scores existed are left out."""
    rows = []
    for r in (analysis or {}).get("steering", {}).get("rows", []):
        if r.get("intervention", "median") == "median" and "content" in r:
            c = r["content"]
            rows.append([f"{table_name(r['src'])}→{table_name(r['tgt'])}", str(r["step"]), r["task"],
                         fmt(r.get("control_rate"), 1), _scored(c.get("chrf_pp")), _scored(c.get("bleu")), "", ""])
    seen = set()
    for r in (analysis or {}).get("steering", {}).get("rows", []):
        if r.get("intervention") == "none" and "errors" in r and (r["src"], r["task"]) not in seen:
            seen.add((r["src"], r["task"]))  # one per source and task: the unsteered output has no target
            e = r["errors"]
            rows.append([table_name(r["src"]), "unsteered", r["task"], "", "", "", _scored(e.get("wer"), 3),
                         _scored(e.get("cer"), 3)])
    return ["pair", "step", "task", "control rate (%)", "chrF++ vs target", "BLEU vs target",
            "WER vs input", "CER vs input"], rows
