"""The report as Markdown and as one self-contained HTML file (figures inline, no external
resource), from the same :class:`Report`."""
from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, fields

from engine.outputs.glance import NA, VERDICT_TEXT, interval
from engine.outputs.report.figures import FIGURES, caption
from engine.outputs.report.tables import CONTENT_NOTE, MISS, STEP_TOKENS_NOTE, TIES_NOTE, fmt


@dataclass(frozen=True)
class Report:
    """Everything both documents show, computed once by ``engine.outputs.report.write_report``."""

    profile: str
    summary: dict       # the regression and paper summaries (``summary.glance``)
    header: list        # (field, text) describing the run
    records: dict       # claim id -> its record (``summary.claim_records``)
    rows: list          # one glance line per claim (``summary.glance_rows``)
    figures: dict       # figure name -> PNG bytes
    missing: dict       # figure name -> why it was not drawn
    tables: list        # the paper's steering tables, measured (``tables.steering_tables``)
    qualitative: tuple  # (header, rows) of Table 2's examples
    content: tuple      # (header, rows): content kept beside language changed (tables.content_table)
    excluded: tuple     # (header, rows): examples excluded per step
    ties: tuple         # (header, rows): ties at the cuts
    step_tokens: tuple  # (header, rows): tokens at the recorded steps
    registry: dict

    def parts(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self))


GLANCE_HEADER = ["claim", "paper", "ours", "our 95% interval", "paper's statement here", "regression baseline",
                 "evidence"]


def _verdict_text(v: str) -> str:
    return VERDICT_TEXT.get(v, f"✗ {v}")


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
    rows = [[m["key"], fmt(m.get("baseline"), 6), fmt(m.get("measured"), 6), fmt(m.get("diff"), 6),
             fmt(m.get("tol"), 6) if m.get("tol") is not None else NA, str(m.get("rule", ""))]
            for m in moved]
    return ["number", "baseline", "measured", "|difference|", "tolerance", "rule"], rows


def _accept_command(profile: str) -> str:
    return f"python -m engine claims --profile {profile} --update-baselines"


def _measured_rows(r: dict) -> list[list[str]]:
    ci = r["ci"] or {}
    return [[k, fmt(v, 4), interval(ci.get(k), lambda x: fmt(x, 4))]
            for k, v in (r["measured"] or {}).items() if "_ci_" not in k]


def markdown(report: Report) -> str:
    """``claims-report.md``: figures referenced as ``figures/<name>.png`` beside it."""
    profile, g, header, records, gl, figures, missing, tables, q_table, c_table, x_table, t_table, s_table, registry = \
        report.parts()
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
        md += [f"### {title}", "", caption(name, registry) + f" Claims: {', '.join(cids)}.", ""]
        md += [f"![{title}](figures/{name}.png)" if name in figures else f"_{missing.get(name, 'not drawn')}_", ""]
        if name in by_table:
            t = by_table[name]
            md += [f"{t['title']}; {MISS}: beyond the claim's tolerance; {t['within']} of {t['total']} paper cells within.",
                   "", _md_table(t["header"], t["rows"]), ""]
    md += ["### Table 2: qualitative examples", "", _md_table(*q_table) if q_table[1] else "_none in the artifact_", ""]
    md += ["### Content kept, language changed", "", CONTENT_NOTE, "",
           _md_table(*c_table) if c_table[1] else "_not scored in this artifact_", ""]
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


def html_document(report: Report) -> str:
    """``claims-report.html``: one file, figures inline as base64 PNG, no external resource."""
    profile, g, header, records, gl, figures, missing, tables, q_table, c_table, x_table, t_table, s_table, registry = \
        report.parts()
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
        parts.append(f"<section id='fig-{e(name)}'><h3>{e(title)}</h3><p class='caption'>{e(caption(name, registry))} "
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
    parts.append(f"<h3 id='content'>Content kept, language changed</h3><p class='caption'>{e(CONTENT_NOTE)}</p>"
                 + (_html_table(*c_table) if c_table[1] else "<p><i>not scored in this artifact</i></p>"))
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
