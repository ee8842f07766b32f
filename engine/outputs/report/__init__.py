"""The claims report: ``reports/<profile>-<timestamp>/`` and ``reports/latest``.

``write_report`` turns an analysis dict, the paper verdicts (``engine.outputs.claims.check``) and
the test outcomes of a claims run into ``claims-report.md`` (figures as PNG files beside
it), a self-contained ``claims-report.html`` (figures inline as base64 PNG, no external
resource, opens offline), and ``claims.json``. ``junit.xml`` is written into the same
directory by pytest's junitxml plugin (claims/conftest.py points it there).

``directories`` (where reports go), ``figures`` (the paper's figures, drawn), ``tables`` (its
tables, measured), ``summary`` (the run, the claims' records and glance lines) and ``render``
(Markdown and HTML of one :class:`~engine.outputs.report.render.Report`)."""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from engine.outputs.claims import information_only, load_registry
from engine.outputs.report.directories import ENV_REPORTS, new_report_dir, reports_root, update_latest
from engine.outputs.report.figures import (
    CLAIM_FIGURE,
    FIGURE_TITLES,
    FIGURES,
    figure_distribution,
    figure_k_sweep,
    figure_overlap,
    figure_spearman,
    make_figures,
)
from engine.outputs.report.render import Report, html_document, markdown
from engine.outputs.report.summary import claim_records, glance, glance_rows, header_lines
from engine.outputs.report.tables import (
    MISS,
    NOT_STEERED,
    content_table,
    excluded_table,
    qualitative_table,
    steering_tables,
    step_tokens_table,
    ties_table,
)

__all__ = ["CLAIM_FIGURE", "ENV_REPORTS", "FIGURES", "FIGURE_TITLES", "MISS", "NOT_STEERED", "figure_distribution",
           "figure_k_sweep", "figure_overlap", "figure_spearman", "make_figures", "new_report_dir", "reports_root",
           "steering_tables", "ties_table", "update_latest", "write_report"]


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
    registry = registry or load_registry()
    run_info = dict(run_info or {})
    run_info.setdefault("generated", _dt.datetime.now().isoformat(timespec="seconds"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = claim_records(profile, registry, verdicts, outcomes, information=bool(information_only(analysis or {})))
    header = header_lines(profile, analysis, run_info)
    figures, missing = (make_figures(analysis, registry) if analysis
                        else ({}, {k: "not drawn: no analysis" for k in FIGURES}))
    g = glance(profile, records, analysis)
    tables = steering_tables(analysis, registry)
    gl = glance_rows(profile, records, analysis, tables)
    report = Report(profile, g, header, records, gl, figures, missing, tables, qualitative_table(analysis),
                    content_table(analysis), excluded_table(analysis), ties_table(analysis),
                    step_tokens_table(analysis), registry)
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
    paths["md"].write_text(markdown(report), encoding="utf-8")
    paths["html"] = out_dir / "claims-report.html"
    paths["html"].write_text(html_document(report), encoding="utf-8")
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
