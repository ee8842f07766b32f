"""Claims S1-S6, T1, T3, T4: steering the output language and its transfer across modalities
(paper §5, A.5, A.6; Tables 1, 3 and 4).

Each claim is one :class:`~engine.outputs.claims.base.Claim`: its measure (``_m_*``), its check
on the paper's bounds (``_c_*``), its headline on the report's first screen (``_h_*``) and the
figure with its evidence, together. Control rates and fastText probabilities are percent; steps
are ints in the artifact's rows. Conditions about a steering pair the run did not steer are not
applicable (``Judge.absent``), neither held nor failed.
"""
from __future__ import annotations

import math

import numpy as np

from engine.outputs.claims.base import Claim, find_row, num, pairs_of, row_ci, row_of, rows_of, steered_pairs
from engine.outputs.glance import NA, extreme, finite, percent, ratio
from engine.science.intervals import mean_difference_ci, ratio_se, se_from_ci
from engine.science.scripts import pair_scripts


def _m_control(a, step_filter=None, task_filter=None):
    out = {}
    for r in rows_of(a):
        if step_filter is not None and int(r["step"]) not in step_filter:
            continue
        if task_filter is not None and r["task"] not in task_filter:
            continue
        out[f"cr.{r['src']}-{r['tgt']}.{r['task']}.{int(r['step'])}"] = num(r["control_rate"])
    return out


def _require_rows(j, m, what):
    j.require(bool(m), f"artifact has {what}")


def _table_rows(a, e, j, cols):
    """Cells of a per-row steering table (Tables 1 and 4): each column within ±tolerance."""
    tol = e["tolerance"]["abs"]
    m = {}
    steered = steered_pairs(a)
    for c in e["paper"]["cells"]:
        key = f"{c['src']}-{c['tgt']}.{c['task']}.{c['step']}"
        if (c["src"], c["tgt"]) not in steered:
            j.absent(f"{key}: pair {c['src']}->{c['tgt']} not steered by this run")
            continue
        try:
            r = row_of(a, c["src"], c["tgt"], c["task"], c["step"])
        except KeyError as exc:
            j.require(False, str(exc))
            continue
        for col in cols:
            v = num(r[col])
            m[f"{col}.{key}"] = v
            j.require(abs(v - c[col]) <= tol, f"{col} {key}: {v:.2f} vs paper {c[col]} (±{tol})")
    return m

# ----------------------------------------------------------------------------- S1


def _m_S1(a):
    return _m_control(a, step_filter={1})


def _c_S1(a, e, j):
    m = _m_S1(a)
    _require_rows(j, m, "steering rows at step 1")
    bound = e["tolerance"]["max_control_rate"]
    for k, v in m.items():
        j.require(v < bound, f"{k} = {v:.2f} < {bound}")
    return m


def _h_S1(m, ci, p, tol, a, cells):
    v, key = extreme(m, "cr.", "", lambda vs: max(vs))
    return {"paper": f"at most {percent(p.get('max_control_rate_t1'))}",
            "ours": NA if v is None else f"at most {percent(v)} ({key.rsplit('.', 1)[0]})"}


S1 = Claim("S1", "t=1 neurons give no control", figure="control_rate", measure=_m_S1, check=_c_S1,
           headline=_h_S1)


# ----------------------------------------------------------------------------- S2

#: The paper's S2 pairs: Latin-script sources, CJK targets (and back).
S2_LATIN, S2_CJK = ("deu", "fra"), ("cmn", "jpn")


def _m_S2(a):
    return _m_control(a, step_filter={6}, task_filter={"ASR"})


def _c_S2(a, e, j):
    m = _m_S2(a)
    if not m:  # with rows, only the paper's pairs among them are judged (others: not applicable)
        _require_rows(j, m, "ASR steering rows at step 6")
    lo = e["paper"]["min_cjk_asr_t6"]
    reverse = []
    for k, v in m.items():
        src, tgt = k.split(".")[1].split("-")
        if src in S2_LATIN and tgt in S2_CJK:
            j.require(v > lo, f"{k} = {v:.2f} > {lo}")
        elif src in S2_CJK and tgt in S2_LATIN:
            reverse.append(v)
        else:
            j.absent(f"{k}: not one of the paper's de/fr <-> zh/ja pairs")
    top, tol = e["paper"]["max_latin_asr_t6"], e["tolerance"]["abs"]
    if reverse:
        mx = max(reverse)
        j.require(abs(mx - top) <= tol, f"max Latin control rate of zh/ja -> de/fr ASR at t=6 {mx:.2f} within "
                                        f"{top} ± {tol}")
        m["max_reverse"] = mx
    else:
        j.absent("no zh/ja -> de/fr pair steered: the paper's 91.69% is not applicable")
    return m


def _h_S2(m, ci, p, tol, a, cells):
    fwd = {k: v for k, v in m.items() if k.startswith("cr.") and k.split(".")[1].split("-")[0] in ("deu", "fra")}
    v, key = extreme(fwd, "cr.", ".ASR.6", lambda vs: min(vs))
    return {"paper": f"every de/fr→zh/ja above {percent(p.get('min_cjk_asr_t6'))}",
            "ours": NA if v is None else f"lowest {percent(v)} ({key})"}


S2 = Claim("S2", "t=6 ASR control above 50%", figure="control_rate", measure=_m_S2, check=_c_S2,
           headline=_h_S2)


# ----------------------------------------------------------------------------- S3

#: S3's references for "transfer": the unsteered run ("none", step None) and, when the
#: artifact has it, the same number of random neurons at t=6 ("random").
S3_REFERENCES = (("none", None), ("random", 6))


def _m_S3(a):
    out = _m_control(a, step_filter={1, 6}, task_filter={"TR"})
    for src, tgt in pairs_of(a):
        for kind, step in (("median", 6),) + S3_REFERENCES:
            r = find_row(a, src, tgt, "TR", step, kind)
            if r is None:
                continue
            key = f"{src}-{tgt}.TR." + ("none" if kind == "none" else f"{step}" + ("" if kind == "median" else f".{kind}"))
            if kind != "median":
                out[f"cr.{key}"] = num(r["control_rate"])
            out[f"cr_ci_lo.{key}"], out[f"cr_ci_hi.{key}"] = row_ci(r)
    return out


def _c_S3(a, e, j):
    m = _m_S3(a)
    lo = e["paper"]["min"] - e["tolerance"]["abs"]
    hi = e["paper"]["max"] + e["tolerance"]["abs"]
    shift = e["tolerance"]["min_shift"]
    pairs = pairs_of(a)
    j.require(bool(pairs), "artifact has steering pairs")
    for src, tgt in pairs:
        p = f"{src}-{tgt}.TR"
        k6, k1 = f"cr.{p}.6", f"cr.{p}.1"
        if k6 not in m or k1 not in m:
            j.require(False, f"TR rows at steps 1 and 6 for {src}-{tgt}")
            continue
        j.require(m[k6] > m[k1], f"{src}-{tgt} TR control rate at t=6 {m[k6]:.2f} > at t=1 {m[k1]:.2f}")
        j.require(lo <= m[k6] <= hi, f"{src}-{tgt} TR control rate at t=6 {m[k6]:.2f} in [{lo:.2f}, {hi:.2f}]")
        if f"cr.{p}.none" not in m:
            j.require(False, f"{src}-{tgt}: unsteered TR row (intervention 'none') present")
        lo6 = m[f"cr_ci_lo.{p}.6"]
        for ref in (f"{p}.none", f"{p}.6.random"):
            if f"cr.{ref}" not in m:
                continue
            name = "unsteered" if ref.endswith("none") else "random neurons"
            j.require(m[k6] - m[f"cr.{ref}"] >= shift,
                      f"{src}-{tgt} TR t=6 {m[k6]:.2f} exceeds {name} {m[f'cr.{ref}']:.2f} by >= {shift} points")
            j.require(lo6 > m[f"cr_ci_hi.{ref}"],
                      f"{src}-{tgt} TR t=6 CI lower {lo6:.2f} > {name} CI upper {m[f'cr_ci_hi.{ref}']:.2f}")
    return m


def _h_S3(m, ci, p, tol, a, cells):
    lo, _ = extreme(m, "cr.", ".TR.6", lambda vs: min(vs))
    hi, _ = extreme(m, "cr.", ".TR.6", lambda vs: max(vs))
    return {"paper": f"{percent(p.get('min'))} to {percent(p.get('max'))}",
            "ours": NA if lo is None else f"{percent(lo)} to {percent(hi)}"}


S3 = Claim("S3", "t=6 neurons transfer to text repetition", figure="control_rate", measure=_m_S3, check=_c_S3,
           headline=_h_S3)


# ----------------------------------------------------------------------------- S4

def _m_S4(a):
    out = _m_control(a, step_filter={6, 11}, task_filter={"ASR"})
    pairs = []
    for src, tgt in pairs_of(a):
        r6, r11 = find_row(a, src, tgt, "ASR", 6), find_row(a, src, tgt, "ASR", 11)
        if r6 is None or r11 is None:
            continue
        for t, r in (("6", r6), ("11", r11)):
            out[f"cr_ci_lo.{src}-{tgt}.ASR.{t}"], out[f"cr_ci_hi.{src}-{tgt}.ASR.{t}"] = row_ci(r)
        pairs.append((num(r11["control_rate"]), se_from_ci(r11.get("control_rate_ci")),
                      num(r6["control_rate"]), se_from_ci(r6.get("control_rate_ci"))))
    if pairs:
        a11, se11, a6, se6 = zip(*pairs)
        d, lo, hi = mean_difference_ci(a11, se11, a6, se6)
        out["mean_rise.6-11"], out["mean_rise_ci_lo.6-11"], out["mean_rise_ci_hi.6-11"] = d, lo, hi
    return out


def _c_S4(a, e, j):
    m = _m_S4(a)
    pairs = pairs_of(a)
    j.require(bool(pairs), "artifact has steering pairs")
    for src, tgt in pairs:
        k6, k11 = f"cr.{src}-{tgt}.ASR.6", f"cr.{src}-{tgt}.ASR.11"
        if k6 not in m or k11 not in m:
            j.require(False, f"ASR rows at steps 6 and 11 for {src}-{tgt}")
            continue
        j.require(m[k11] > m[k6], f"{src}-{tgt} ASR control rate at t=11 {m[k11]:.2f} > at t=6 {m[k6]:.2f}")
    d, lo = m.get("mean_rise.6-11", float("nan")), m.get("mean_rise_ci_lo.6-11", float("nan"))
    j.require(lo > 0, f"mean rise over pairs t=6 -> t=11 {d:.2f} points, 95% CI lower bound {lo:.2f} > 0 "
                      "(from the rows' control_rate_ci)")
    return m


def _h_S4(m, ci, p, tol, a, cells):
    n = p.get("pairs")
    pairs = sorted({k.split(".")[1] for k in m if k.startswith("cr.") and k.endswith(".ASR.11")})
    rising = sum(1 for q in pairs if (finite(m.get(f"cr.{q}.ASR.11")) or 0) > (finite(m.get(f"cr.{q}.ASR.6")) or 0)
                 and finite(m.get(f"cr.{q}.ASR.6")) is not None)
    return {"paper": f"{n} of {n} pairs", "ours": f"{rising} of {len(pairs)} pairs" if pairs else NA}


S4 = Claim("S4", "ASR control higher at t=11 than t=6", figure="control_rate", measure=_m_S4, check=_c_S4,
           headline=_h_S4)


# ----------------------------------------------------------------------------- S5

def _effect_ratio_spread(a, p) -> float:
    """Delta-method standard error of one effect-ratio pair, from its rows' CIs."""
    tr = find_row(a, p["src"], p["tgt"], "TR", p["step"])
    asr = find_row(a, p["src"], p["tgt"], "ASR", p["step"])
    if tr is None or asr is None:
        return float("nan")
    return ratio_se(num(p["cr_tr"]), se_from_ci(tr.get("control_rate_ci")),
                    num(p["cr_asr"]), se_from_ci(asr.get("control_rate_ci")))


def _m_S5(a):
    er = a["steering"]["effect_ratio"]
    out = {f"mean.{t}": num(v) for t, v in er["mean"].items()}
    valid: dict[str, list[tuple[float, float]]] = {}
    for p in er["pairs"]:
        out[f"ratio.{p['src']}-{p['tgt']}.{int(p['step'])}"] = num(p.get("ratio"))
        if p.get("ratio") is not None:
            valid.setdefault(str(int(p["step"])), []).append((num(p["ratio"]), _effect_ratio_spread(a, p)))
    if valid.get("6") and valid.get("11"):
        # the mean over the valid pairs of each step, as the paper's 0.36 and 0.49
        m6, m11 = (float(np.mean([r for r, _ in valid[t]])) for t in ("6", "11"))
        se6, se11 = (float(np.sqrt(sum(s ** 2 for _, s in valid[t])) / len(valid[t])) for t in ("6", "11"))
        d, lo, hi = mean_difference_ci([m11], [se11], [m6], [se6])
        out["mean_rise.6-11"], out["mean_rise_ci_lo.6-11"], out["mean_rise_ci_hi.6-11"] = d, lo, hi
    return out


def _c_S5(a, e, j):
    m = _m_S5(a)
    tol = e["tolerance"]["abs"]
    for t, p in e["paper"]["mean"].items():
        v = m.get(f"mean.{t}", float("nan"))
        j.require(abs(v - p) <= tol, f"|mean effect ratio(t={t}) {v:.3f} - paper {p}| <= {tol}")
    d, lo = m.get("mean_rise.6-11", float("nan")), m.get("mean_rise_ci_lo.6-11", float("nan"))
    j.require(lo > 0, f"mean effect ratio rises t=6 -> t=11 by {d:.3f}, 95% CI lower bound {lo:.3f} > 0 "
                      "(delta method on the rows' control_rate_ci)")
    both = 0
    for src, tgt in pairs_of(a):
        r6, r11 = m.get(f"ratio.{src}-{tgt}.6", float("nan")), m.get(f"ratio.{src}-{tgt}.11", float("nan"))
        if math.isnan(r6) or math.isnan(r11):
            continue
        both += 1
        j.require(r11 > r6, f"{src}-{tgt} effect ratio at t=11 {r11:.3f} > at t=6 {r6:.3f}")
    j.require(both > 0, f"pairs valid at both t=6 and t=11: {both} > 0")
    return m


def _h_S5(m, ci, p, tol, a, cells):
    d = p.get("mean", {})
    return {"paper": f"{ratio(d.get('6'))} → {ratio(d.get('11'))}",
            "ours": f"{ratio(m.get('mean.6'))} → {ratio(m.get('mean.11'))}"}


S5 = Claim("S5", "Mean effect ratio rises t=6 → t=11", figure="effect_ratio", measure=_m_S5, check=_c_S5,
           headline=_h_S5)


# ----------------------------------------------------------------------------- S6

def _m_S6(a):
    return {f"ft_tgt.{r['src']}-{r['tgt']}.{r['task']}.{int(r['step'])}": num(r["ft_tgt"]) for r in rows_of(a)}


def _c_S6(a, e, j):
    m = _m_S6(a)
    _require_rows(j, m, "steering rows with ft_tgt")
    bound = e["tolerance"]["max_ft_tgt_t1"]
    by_step: dict[int, list[float]] = {}
    for k, v in m.items():
        step = int(k.rsplit(".", 1)[1])
        by_step.setdefault(step, []).append(v)
        if step == 1:
            j.require(v <= bound, f"{k} = {v:.2f} <= {bound}")
        else:
            k1 = k.rsplit(".", 1)[0] + ".1"
            if k1 in m:
                j.require(v > m[k1], f"{k} = {v:.2f} > t=1 value {m[k1]:.2f}")
    means = {s: float(np.mean(v)) for s, v in by_step.items()}
    j.require(means.get(1, math.inf) < means.get(6, -math.inf) < means.get(11, -math.inf),
              f"mean ft_tgt rises t=1 {means.get(1, math.nan):.2f} < t=6 {means.get(6, math.nan):.2f} < t=11 {means.get(11, math.nan):.2f}")
    m.update({f"mean_ft_tgt.{s}": v for s, v in means.items()})
    return m


def _h_S6(m, ci, p, tol, a, cells):
    v, _ = extreme(m, "ft_tgt.", ".1", lambda vs: max(vs))
    return {"paper": f"at most {percent(p.get('max_ft_tgt_t1'))} at t=1",
            "ours": NA if v is None else f"at most {percent(v)} at t=1"}


S6 = Claim("S6", "fastText target ≈0 at t=1, rises later", figure="fasttext", measure=_m_S6, check=_c_S6,
           headline=_h_S6)


# ----------------------------------------------------------------------------- T1, T3, T4: the paper's tables, cell by cell

def _h_table(m, ci, p, tol, a, cells):
    """A paper table (T1, T3, T4): how many of its cells this run reproduces within tolerance."""
    n = len(p.get("cells", []))
    tol = tol or {}
    band = f"±{tol['abs']:g} pp" if "abs" in tol else f"±{tol.get('abs_rate', 0):g} pp, ±{tol.get('abs_ratio', 0):g}"
    if cells is None:
        return {"paper": f"{n} cells", "ours": NA}
    return {"paper": f"{n} cells",
            "ours": f"{cells[0]} of {cells[1]} within {band}" + (f" ({n - cells[1]} not steered)" if cells[1] < n else "")}


def _m_T1(a):
    """Each row's shares by its own control metric: both script classes of a cross-script pair
    (``latin.*`` and ``cjk.*`` for the paper's), the language-ID rate (``lid.*``) of a
    same-script one, as the steer stage scored it (``engine.science.steering_scores.score_outputs``)."""
    out = {}
    for r in rows_of(a):
        key = f"{r['src']}-{r['tgt']}.{r['task']}.{int(r['step'])}"
        if r.get("control_by") == "langid":
            out[f"lid.{key}"] = num(r["control_rate"])
            continue
        src_cls, tgt_cls = pair_scripts(r["src"], r["tgt"])
        out[f"{src_cls}.{key}"], out[f"{tgt_cls}.{key}"] = num(r.get(src_cls)), num(r.get(tgt_cls))
    return out


def _c_T1(a, e, j):
    return _table_rows(a, e, j, ("latin", "cjk"))


T1 = Claim("T1", "Table 1 (control rates) reproduced", figure="control_rate", measure=_m_T1, check=_c_T1,
           headline=_h_table)


def _m_T3(a):
    out = {}
    for p in a["steering"]["effect_ratio"]["pairs"]:
        key = f"{p['src']}-{p['tgt']}.{int(p['step'])}"
        out[f"cr_asr.{key}"], out[f"cr_tr.{key}"] = num(p["cr_asr"]), num(p["cr_tr"])
        out[f"ratio.{key}"] = num(p.get("ratio"))
    return out


def _c_T3(a, e, j):
    tr, tq = e["tolerance"]["abs_rate"], e["tolerance"]["abs_ratio"]
    pairs = {(p["src"], p["tgt"], int(p["step"])): p for p in a["steering"]["effect_ratio"]["pairs"]}
    m = {}
    steered = steered_pairs(a)
    for c in e["paper"]["cells"]:
        key = f"{c['src']}-{c['tgt']}.{c['step']}"
        if (c["src"], c["tgt"]) not in steered:
            j.absent(f"{key}: pair {c['src']}->{c['tgt']} not steered by this run")
            continue
        p = pairs.get((c["src"], c["tgt"], int(c["step"])))
        if p is None:
            j.require(False, f"effect-ratio pair {key} present")
            continue
        for col, tol in (("cr_asr", tr), ("cr_tr", tr), ("ratio", tq)):
            v = num(p.get(col))
            m[f"{col}.{key}"] = v
            j.require(abs(v - c[col]) <= tol, f"{col} {key}: {v:.3f} vs paper {c[col]} (±{tol})")
    return m


T3 = Claim("T3", "Table 3 (effect ratios) reproduced", figure="effect_ratio", measure=_m_T3, check=_c_T3,
           headline=_h_table)


def _m_T4(a):
    out = {}
    for r in rows_of(a):
        key = f"{r['src']}-{r['tgt']}.{r['task']}.{int(r['step'])}"
        out[f"ft_src.{key}"], out[f"ft_tgt.{key}"] = num(r["ft_src"]), num(r["ft_tgt"])
    return out


def _c_T4(a, e, j):
    return _table_rows(a, e, j, ("ft_src", "ft_tgt"))


T4 = Claim("T4", "Table 4 (fastText) reproduced", figure="fasttext", measure=_m_T4, check=_c_T4,
           headline=_h_table)


CLAIMS = (S1, S2, S3, S4, S5, S6, T1, T3, T4)
