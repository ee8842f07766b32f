"""The report's first screen: one line per claim, the paper's headline number beside ours.

``headline(claim_id, measured, ci, paper, tolerance, analysis)`` returns the line's cells as
strings, in the unit the paper states the number in: fractions of neurons as percent with one
decimal ("56.6%"), control rates and fastText probabilities (already percent) the same way,
effect ratios with two decimals, p values as "p = 0.008". A qualitative claim shows the
paper's criterion and our matching value ("peak layers 4–10" / "peak layer 6"). Every value
that is absent, None or NaN reads "n/a"; an interval is shown only where one exists ("").

The formatting functions are public because the report's tables use the same ones.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

NA = "n/a"
#: Symbols with words, so that the verdict never rests on colour alone.
VERDICT_TEXT = {"holds": "✓ holds", "does not hold": "✗ does not hold", "matches": "✓ matches",
                "moved": "✗ moved", "not run": "– not run", "n/a": "– n/a",
                "not applicable": "– not applicable"}


def finite(x) -> float | None:
    """``x`` as a float, or None where it is missing, not a number, infinite or a bool."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) or math.isinf(v) else v


def percent(x, *, fraction: bool = False, nd: int = 1) -> str:
    """``x`` as "12.3%": ``fraction=True`` multiplies by 100 first. None/NaN -> "n/a"."""
    v = finite(x)
    if v is None:
        return NA
    v = v * 100 if fraction else v
    return f"{v:.{nd}f}%".replace("-", "−")


def ratio(x, nd: int = 2) -> str:
    """A dimensionless ratio with ``nd`` decimals; None/NaN -> "n/a"."""
    v = finite(x)
    return NA if v is None else f"{v:.{nd}f}".replace("-", "−")


def count(x) -> str:
    """A count (integer-valued) without decimals; None/NaN -> "n/a"."""
    v = finite(x)
    return NA if v is None else f"{v:.0f}"


def p_value(p) -> str:
    """"p = 0.008" (three decimals), "p < 0.001" below that; None/NaN -> "n/a"."""
    v = finite(p)
    if v is None:
        return NA
    return "p < 0.001" if v < 0.001 else f"p = {v:.3f}"


def interval(ci, fmt=ratio) -> str:
    """``[lo, hi]`` in ``fmt``'s unit, or "" when there is no interval (None or any NaN end)."""
    if not ci or len(ci) != 2:
        return ""
    lo, hi = (finite(c) for c in ci)
    if lo is None or hi is None:
        return ""
    return f"[{fmt(lo)}, {fmt(hi)}]"


def _frac(x) -> str:
    return percent(x, fraction=True)


def _at(measured: Mapping, key: str):
    return measured.get(key) if measured else None


def _steps_line(measured, stem: str, fmt, steps=("1", "6", "11")) -> str:
    """"v1 at t=1 (vs v6, v11)": the headline step first, the others for the ordering."""
    head, rest = steps[0], steps[1:]
    others = ", ".join(fmt(_at(measured, f"{stem}.{t}")) for t in rest)
    return f"{fmt(_at(measured, f'{stem}.{head}'))} at t={head} (vs {others})"


def _extreme(measured: Mapping, prefix: str, suffix: str, pick) -> tuple[float | None, str | None]:
    vals = [(v, k) for k, v in (measured or {}).items()
            if k.startswith(prefix) and k.endswith(suffix) and finite(v) is not None]
    if not vals:
        return None, None
    v, k = pick(vals)
    return v, k[len(prefix):-len(suffix) or None]


def _arrow(vals, fmt) -> str:
    return "→".join(fmt(v) for v in vals)


#: The claim in a few words, for the first screen (the registry keeps the full statement).
SHORT = {
    "R1": "Diagonal overlap ratio is highest at t=1",
    "R2": "Diagonal preference beats chance at every step",
    "R3": "Total overlap grows after t=1",
    "R4": "fra–spa, jpn–cmn overlaps grow after t=1",
    "R5": "Spearman diagonal concentration stable, max at t=1",
    "R6": "Diagonal ratio highest at t=1 for every k",
    "R7": "Speech encoder: top-k in middle layers",
    "R8": "Text encoder: top-k peak at the first layer",
    "R9": "Decoder: self-attn at t=1, cross-attn at t=11",
    "S1": "t=1 neurons give no control",
    "S2": "t=6 ASR control above 50%",
    "S3": "t=6 neurons transfer to text repetition",
    "S4": "ASR control higher at t=11 than t=6",
    "S5": "Mean effect ratio rises t=6 → t=11",
    "S6": "fastText target ≈0 at t=1, rises later",
    "T1": "Table 1 (control rates) reproduced",
    "T3": "Table 3 (effect ratios) reproduced",
    "T4": "Table 4 (fastText) reproduced",
}


def headline(claim_id: str, measured: Mapping | None, ci: Mapping | None, paper: Mapping, tolerance: Any,
             analysis: Mapping | None = None, cells: tuple[int, int] | None = None) -> dict[str, str]:
    """The glance line of one claim: ``{"claim", "paper", "ours", "interval"}`` (all strings).

    ``measured`` / ``ci``: the claim's ``engine.outputs.claims.Verdict.measured`` and ``.ci`` (None when
    the claim could not be measured: then "ours" is "n/a"). ``paper`` / ``tolerance``: its
    registry entry's. ``analysis``: for the few headlines read from a section directly (the k
    sweep, the speech encoder's layers). ``cells``: (within tolerance, total) for the table
    claims T1/T3/T4. ``interval`` is the interval of the headline number only, "" if none.
    """
    m, ci = measured or {}, ci or {}
    a = analysis or {}
    out = {"claim": SHORT.get(claim_id, claim_id), "paper": NA, "ours": NA if not m else "", "interval": ""}
    p = paper or {}
    if claim_id in ("R1", "R5"):  # a fraction per step, the t=1 one with its interval
        stat, paper_key = {"R1": ("diagonal_ratio", "diagonal_ratio"),
                           "R5": ("concentration", "spearman_diag_concentration")}[claim_id]
        d = p.get(paper_key, {})
        out["paper"] = f"{_frac(d.get('1'))} at t=1 (vs {_frac(d.get('6'))}, {_frac(d.get('11'))})"
        out["ours"] = _steps_line(m, stat, _frac)
        out["interval"] = interval(ci.get(f"{stat}.1"), _frac)
    elif claim_id == "R2":
        out["paper"] = f"p < {p.get('perm_p_max', 0.05)} at every step"
        v, step = _extreme(m, "perm_p.", "", lambda vs: max(vs))
        out["ours"] = NA if v is None else f"largest {p_value(v)} (t={step})"
    elif claim_id == "R3":
        out["paper"] = "t=6, t=11 above t=1"
        out["ours"] = f"{count(_at(m, 'total.1'))} at t=1 → {count(_at(m, 'total.6'))}, {count(_at(m, 'total.11'))}"
    elif claim_id == "R4":
        out["paper"] = "shares rise after t=1"
        parts = []
        for x, y in p.get("pairs", []):
            vals = [_at(m, f"share.{x}-{y}.{t}") for t in ("1", "6", "11")]
            parts.append(f"{x}–{y} {_arrow(vals, _frac)}")
        out["ours"] = "; ".join(parts) or NA
    elif claim_id == "R6":
        out["paper"] = "t=1 highest at every k"
        sweep = a.get("k_sweep") or {}
        by = sweep.get("diagonal_ratio") or {}
        if "1" in by and len(by) > 1:
            others = [by[t] for t in by if t != "1"]
            wins = sum(all(finite(r1) is not None and finite(o[i]) is not None and r1 > o[i] for o in others)
                       for i, r1 in enumerate(by["1"]))
            out["ours"] = f"t=1 highest at {wins} of {len(by['1'])} k"
        else:
            out["ours"] = NA
    elif claim_id == "R7":
        lo, hi = p.get("layers", [None, None])
        out["paper"] = f"peak layers {lo}–{hi}"
        layers = ((a.get("distribution") or {}).get("speech_encoder") or {}).get("by_layer")
        if layers:
            peak = max(range(len(layers)), key=lambda i: layers[i])
            out["ours"] = f"peak layer {peak}; {_frac(_at(m, 'band_share'))} in {lo}–{hi}"
        else:
            out["ours"] = NA
    elif claim_id == "R8":
        out["paper"] = f"peak layer {p.get('peak_layer', 0)}"
        v = finite(_at(m, "argmax_layer"))
        out["ours"] = NA if v is None else f"peak layer {v:.0f} ({_frac(_at(m, 'layer0_share'))} at layer 0)"
    elif claim_id == "R9":
        out["paper"] = "t=1 mostly self, t=11 mostly cross"
        out["ours"] = (f"t=1 self {_frac(_at(m, 'self_share.speech.1'))} / cross {_frac(_at(m, 'cross_share.speech.1'))}; "
                       f"t=11 self {_frac(_at(m, 'self_share.speech.11'))} / cross {_frac(_at(m, 'cross_share.speech.11'))}"
                       " (speech)")
    elif claim_id == "S1":
        out["paper"] = f"at most {percent(p.get('max_control_rate_t1'))}"
        v, key = _extreme(m, "cr.", "", lambda vs: max(vs))
        out["ours"] = NA if v is None else f"at most {percent(v)} ({key.rsplit('.', 1)[0]})"
    elif claim_id == "S2":
        out["paper"] = f"every de/fr→zh/ja above {percent(p.get('min_cjk_asr_t6'))}"
        fwd = {k: v for k, v in m.items() if k.startswith("cr.") and k.split(".")[1].split("-")[0] in ("deu", "fra")}
        v, key = _extreme(fwd, "cr.", ".ASR.6", lambda vs: min(vs))
        out["ours"] = NA if v is None else f"lowest {percent(v)} ({key})"
    elif claim_id == "S3":
        out["paper"] = f"{percent(p.get('min'))} to {percent(p.get('max'))}"
        lo, _ = _extreme(m, "cr.", ".TR.6", lambda vs: min(vs))
        hi, _ = _extreme(m, "cr.", ".TR.6", lambda vs: max(vs))
        out["ours"] = NA if lo is None else f"{percent(lo)} to {percent(hi)}"
    elif claim_id == "S4":
        n = p.get("pairs")
        out["paper"] = f"{n} of {n} pairs"
        pairs = sorted({k.split(".")[1] for k in m if k.startswith("cr.") and k.endswith(".ASR.11")})
        rising = sum(1 for q in pairs if (finite(m.get(f"cr.{q}.ASR.11")) or 0) > (finite(m.get(f"cr.{q}.ASR.6")) or 0)
                     and finite(m.get(f"cr.{q}.ASR.6")) is not None)
        out["ours"] = f"{rising} of {len(pairs)} pairs" if pairs else NA
    elif claim_id == "S5":
        d = p.get("mean", {})
        out["paper"] = f"{ratio(d.get('6'))} → {ratio(d.get('11'))}"
        out["ours"] = f"{ratio(_at(m, 'mean.6'))} → {ratio(_at(m, 'mean.11'))}"
    elif claim_id == "S6":
        out["paper"] = f"at most {percent(p.get('max_ft_tgt_t1'))} at t=1"
        v, _ = _extreme(m, "ft_tgt.", ".1", lambda vs: max(vs))
        out["ours"] = NA if v is None else f"at most {percent(v)} at t=1"
    elif claim_id in ("T1", "T3", "T4"):
        n = len(p.get("cells", []))
        out["paper"] = f"{n} cells"
        tol = tolerance or {}
        band = (f"±{tol['abs']:g} pp" if "abs" in tol else
                f"±{tol.get('abs_rate', 0):g} pp, ±{tol.get('abs_ratio', 0):g}")
        if cells is None:
            out["ours"] = NA
        else:
            out["ours"] = f"{cells[0]} of {cells[1]} within {band}" + (f" ({n - cells[1]} not steered)"
                                                                       if cells[1] < n else "")
    if not m:
        out["ours"], out["interval"] = NA, ""
    return out
