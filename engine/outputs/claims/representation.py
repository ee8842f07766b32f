"""Claims R1-R9: step-dependent cross-modal language representations (paper §4, A.3, A.4).

Each claim is one :class:`~engine.outputs.claims.base.Claim`: its measure (``_m_*``), its check
on the paper's bounds (``_c_*``), its headline on the report's first screen (``_h_*``) and the
figure with its evidence, together. Units follow the registry: overlap and Spearman figures are
fractions; steps are the strings ``"1"``, ``"6"``, ``"11"``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from engine.outputs.claims.base import Claim, ci_of, difference, num, steps_of
from engine.outputs.glance import NA, arrow, at, count, extreme, finite, frac, interval, p_value, steps_line


def share(matrix, langs, a, b) -> float:
    O = np.asarray(matrix, dtype=float)
    i, j = langs.index(a), langs.index(b)
    total = O.sum()
    return float((O[i, j] + O[j, i]) / total) if total > 0 else float("nan")


def enrichment(dist: dict, match: Callable[[str], bool]) -> float:
    counts, sizes = dist["by_component"], dist["component_sizes"]
    n_count = sum(counts.values())
    n_size = sum(sizes.values())
    c = sum(v for k, v in counts.items() if match(k))
    s = sum(v for k, v in sizes.items() if match(k))
    if n_count == 0 or s == 0:
        return float("nan")
    return (c / n_count) / (s / n_size)


def is_pointwise(name: str) -> bool:
    return "pointwise_conv" in name


def is_speech_attention(name: str) -> bool:
    return name.split(".")[-1] in ("linear_q", "linear_k", "linear_v", "linear_out") and "self_attn" in name


def component_share(dist: dict, names) -> float:
    counts = dist["by_component"]
    total = sum(counts.values())
    return float(sum(counts.get(n, 0) for n in names) / total) if total else float("nan")


def _differences(a, stat, out, prefix="diff"):
    for t in ("6", "11"):
        pair = f"1-{t}"
        d, lo, hi = difference(a, stat, pair)
        out[f"{prefix}.{pair}"], out[f"{prefix}_ci_lo.{pair}"], out[f"{prefix}_ci_hi.{pair}"] = d, lo, hi


def _fraction_per_step(stat: str, paper_key: str):
    """The headline of a fraction per step (R1, R5): the t=1 one with its interval, the others after it."""
    def headline(m, ci, p, tol, a, cells):
        d = p.get(paper_key, {})
        return {"paper": f"{frac(d.get('1'))} at t=1 (vs {frac(d.get('6'))}, {frac(d.get('11'))})",
                "ours": steps_line(m, stat, frac), "interval": interval(ci.get(f"{stat}.1"), frac)}
    return headline


# ----------------------------------------------------------------------------- R1

def _m_R1(a):
    out = {}
    for t in steps_of(a):
        o = a["overlap"][t]
        out[f"diagonal_ratio.{t}"] = num(o["diagonal_ratio"])
        lo, hi = ci_of(o, "diagonal_ratio_ci")
        out[f"diagonal_ratio_ci_lo.{t}"], out[f"diagonal_ratio_ci_hi.{t}"] = lo, hi
    _differences(a, "diagonal_ratio", out)
    return out


def _c_R1(a, e, j):
    m = _m_R1(a)
    tol = e["tolerance"]["abs"]
    for t in ("6", "11"):
        d, lo = m[f"diff.1-{t}"], m[f"diff_ci_lo.1-{t}"]
        j.require(lo > 0, f"diagonal_ratio(t=1) - diagonal_ratio(t={t}) = {d:.4f}, interval lower bound {lo:.4f} > 0")
    for t, p in e["paper"]["diagonal_ratio"].items():
        v = m[f"diagonal_ratio.{t}"]
        j.require(abs(v - p) <= tol, f"|diagonal_ratio(t={t}) {v:.4f} - paper {p}| <= {tol}")
    return m


R1 = Claim("R1", "Diagonal overlap ratio is highest at t=1", figure="overlap", measure=_m_R1, check=_c_R1,
           headline=_fraction_per_step("diagonal_ratio", "diagonal_ratio"))


# ----------------------------------------------------------------------------- R2

def _m_R2(a):
    out = {}
    for t in steps_of(a):
        out[f"perm_p.{t}"] = num(a["overlap"][t]["perm_p"])
        out[f"perm_stat.{t}"] = num(a["overlap"][t]["perm_stat"])
    return out


def _c_R2(a, e, j):
    m = _m_R2(a)
    alpha = e["tolerance"]["alpha"]
    steps = steps_of(a)
    for t in steps:
        j.require(m[f"perm_p.{t}"] < alpha, f"perm_p(t={t}) {m[f'perm_p.{t}']:.4g} < {alpha}")
    for t in steps:
        if t == "1":
            continue
        j.require(m["perm_p.1"] <= m[f"perm_p.{t}"], f"perm_p(t=1) {m['perm_p.1']:.4g} <= perm_p(t={t}) {m[f'perm_p.{t}']:.4g}")
        j.require(m["perm_stat.1"] >= m[f"perm_stat.{t}"], f"perm_stat(t=1) {m['perm_stat.1']:.4f} >= perm_stat(t={t}) {m[f'perm_stat.{t}']:.4f}")
    return m


def _h_R2(m, ci, p, tol, a, cells):
    v, step = extreme(m, "perm_p.", "", lambda vs: max(vs))
    return {"paper": f"p < {p.get('perm_p_max', 0.05)} at every step",
            "ours": NA if v is None else f"largest {p_value(v)} (t={step})"}


R2 = Claim("R2", "Diagonal preference beats chance at every step", figure="overlap", measure=_m_R2, check=_c_R2,
           headline=_h_R2)


# ----------------------------------------------------------------------------- R3

def _m_R3(a):
    out = {}
    for t in steps_of(a):
        o = a["overlap"][t]
        out[f"total.{t}"] = num(o["total"])
        out[f"total_ci_lo.{t}"], out[f"total_ci_hi.{t}"] = ci_of(o, "total_ci")
    _differences(a, "total", out)
    return out


def _c_R3(a, e, j):
    m = _m_R3(a)
    for t in ("6", "11"):
        d, hi = m[f"diff.1-{t}"], m[f"diff_ci_hi.1-{t}"]
        j.require(hi < 0, f"total(t=1) - total(t={t}) = {d:.1f}, interval upper bound {hi:.1f} < 0")
    return m


def _h_R3(m, ci, p, tol, a, cells):
    return {"paper": "t=6, t=11 above t=1",
            "ours": f"{count(at(m, 'total.1'))} at t=1 → {count(at(m, 'total.6'))}, {count(at(m, 'total.11'))}"}


R3 = Claim("R3", "Total overlap grows after t=1", figure="overlap", measure=_m_R3, check=_c_R3,
           headline=_h_R3)


# ----------------------------------------------------------------------------- R4

R4_PAIRS = (("fra", "spa"), ("jpn", "cmn"))


def _m_R4(a):
    out = {}
    for t in steps_of(a):
        o = a["overlap"][t]
        for x, y in R4_PAIRS:
            if x in o["langs"] and y in o["langs"]:  # a run without a pair's languages cannot measure it
                out[f"share.{x}-{y}.{t}"] = share(o["matrix"], list(o["langs"]), x, y)
    return out


def _c_R4(a, e, j):
    m = _m_R4(a)
    for x, y in R4_PAIRS:
        if f"share.{x}-{y}.1" not in m:
            j.absent(f"{x}-{y}: this run's data.langs lack {x} or {y}")
            continue
        s1 = m[f"share.{x}-{y}.1"]
        for t in ("6", "11"):
            st = m[f"share.{x}-{y}.{t}"]
            j.require(st > s1, f"{x}-{y} overlap share at t={t} ({st:.4f}) > at t=1 ({s1:.4f})")
    return m


def _h_R4(m, ci, p, tol, a, cells):
    parts = []
    for x, y in p.get("pairs", []):
        vals = [at(m, f"share.{x}-{y}.{t}") for t in ("1", "6", "11")]
        parts.append(f"{x}–{y} {arrow(vals, frac)}")
    return {"paper": "shares rise after t=1", "ours": "; ".join(parts) or NA}


R4 = Claim("R4", "fra–spa, jpn–cmn overlaps grow after t=1", figure="overlap", measure=_m_R4, check=_c_R4,
           headline=_h_R4)


# ----------------------------------------------------------------------------- R5

def _typology(R, langs, groups):
    R = np.asarray(R, dtype=float)
    group_of = {lang: g for g, members in enumerate(groups) for lang in members}
    within, between = [], []
    for i, li in enumerate(langs):
        for j, lj in enumerate(langs):
            if i == j or li not in group_of or lj not in group_of:
                continue
            (within if group_of[li] == group_of[lj] else between).append(R[i, j])
    return (float(np.mean(within)) if within else float("nan"),
            float(np.mean(between)) if between else float("nan"))


R5_GROUPS = (("deu", "spa", "fra"), ("cmn", "jpn"))


def _m_R5(a):
    out = {}
    for t in steps_of(a):
        o = a["overlap"][t]
        out[f"concentration.{t}"] = num(o["spearman_diag_concentration"])
        R = np.asarray(o["spearman"], dtype=float)
        out[f"spearman_trace.{t}"], out[f"spearman_sum.{t}"] = float(np.trace(R)), float(R.sum())
        lo, hi = ci_of(o, "spearman_diag_concentration_ci")
        out[f"concentration_ci_lo.{t}"], out[f"concentration_ci_hi.{t}"] = lo, hi
        w, b = _typology(o["spearman"], list(o["langs"]), R5_GROUPS)
        out[f"rho_within.{t}"], out[f"rho_between.{t}"] = w, b
    conc = [out[f"concentration.{t}"] for t in steps_of(a)]
    out["concentration_spread"] = float(max(conc) - min(conc)) if conc else float("nan")
    return out


def _c_R5(a, e, j):
    m = _m_R5(a)
    tol = e["tolerance"]["abs"]
    for t, p in e["paper"]["spearman_diag_concentration"].items():
        v = m[f"concentration.{t}"]
        j.require(abs(v - p) <= tol, f"|concentration(t={t}) {v:.4f} - paper {p}| <= {tol}")
    spread = e["tolerance"]["max_spread"]
    j.require(m["concentration_spread"] <= spread,
              f"stable: max - min concentration over steps {m['concentration_spread']:.4f} <= {spread}")
    c1 = m["concentration.1"]
    for t in ("6", "11"):
        ct = m[f"concentration.{t}"]
        j.require(c1 > ct, f"highest at t=1 (point estimates): concentration(t=1) {c1:.4f} > (t={t}) {ct:.4f}")
    for t in steps_of(a):
        w, b = m[f"rho_within.{t}"], m[f"rho_between.{t}"]
        j.require(w > b, f"t={t}: mean within-group rho {w:.4f} > mean between-group rho {b:.4f}")
    return m


R5 = Claim("R5", "Spearman diagonal concentration stable, max at t=1", figure="spearman", measure=_m_R5, check=_c_R5,
           headline=_fraction_per_step("concentration", "spearman_diag_concentration"))


# ----------------------------------------------------------------------------- R6

def _m_R6(a):
    ks = a["k_sweep"]["ks"]
    cis = a["k_sweep"].get("diagonal_ratio_ci") or {}
    out = {}
    for t, values in a["k_sweep"]["diagonal_ratio"].items():
        if len(values) != len(ks):
            raise KeyError(f"k_sweep.diagonal_ratio['{t}'] has {len(values)} values for {len(ks)} ks")
        for i, (k, v) in enumerate(zip(ks, values)):
            out[f"ratio.k{k}.{t}"] = num(v)
            if t in cis:
                lo, hi = cis[t][i] if cis[t][i] is not None else (None, None)  # withheld
                out[f"ratio_ci_lo.k{k}.{t}"], out[f"ratio_ci_hi.k{k}.{t}"] = num(lo), num(hi)
    _differences(a, "sweep_mean", out, prefix="sweep_mean_diff")
    return out


def _c_R6(a, e, j):
    m = _m_R6(a)
    ks = a["k_sweep"]["ks"]
    recovered = 0
    for k in ks:
        r1, r6, r11 = (m[f"ratio.k{k}.{t}"] for t in ("1", "6", "11"))
        j.require(r1 > r6 and r1 > r11, f"k={k}: ratio(t=1) {r1:.4f} > ratio(t=6) {r6:.4f} and ratio(t=11) {r11:.4f}")
        recovered += r11 > r6
    for t in ("6", "11"):
        d, lo = m[f"sweep_mean_diff.1-{t}"], m[f"sweep_mean_diff_ci_lo.1-{t}"]
        j.require(lo > 0, f"over the sweep: mean ratio(t=1) - mean ratio(t={t}) = {d:.4f}, "
                          f"interval lower bound {lo:.4f} > 0")
    need = e["tolerance"]["recovery_min_share"]
    share = recovered / len(ks) if ks else 0.0
    j.require(bool(ks) and share >= need, f"share of k with ratio(t=11) > ratio(t=6): {share:.2f} >= {need}")
    m["recovery_share"] = share
    return m


def _h_R6(m, ci, p, tol, a, cells):
    by = (a.get("k_sweep") or {}).get("diagonal_ratio") or {}
    ours = NA
    if "1" in by and len(by) > 1:
        others = [by[t] for t in by if t != "1"]
        wins = sum(all(finite(r1) is not None and finite(o[i]) is not None and r1 > o[i] for o in others)
                   for i, r1 in enumerate(by["1"]))
        ours = f"t=1 highest at {wins} of {len(by['1'])} k"
    return {"paper": "t=1 highest at every k", "ours": ours}


R6 = Claim("R6", "Diagonal ratio highest at t=1 for every k", figure="k_sweep", measure=_m_R6, check=_c_R6,
           headline=_h_R6)


# ----------------------------------------------------------------------------- R7

R7_LAYERS = (4, 10)


def _m_R7(a):
    d = a["distribution"]["speech_encoder"]
    by_layer = np.asarray(d["by_layer"], dtype=float)
    lo, hi = R7_LAYERS
    in_band = np.arange(len(by_layer))
    in_band = (in_band >= lo) & (in_band <= hi)
    total = by_layer.sum()
    out = {
        "band_share": float(by_layer[in_band].sum() / total) if total else float("nan"),
        "band_uniform_share": float(in_band.sum() / len(by_layer)) if len(by_layer) else float("nan"),
        "attention_enrichment": enrichment(d, is_speech_attention),
    }
    # "certain pointwise convolutional submodules": each pointwise convolution on its own
    for name in sorted(n for n in d["component_sizes"] if is_pointwise(n)):
        out[f"enrichment.{name}"] = enrichment(d, lambda c, name=name: c == name)
    return out


def _c_R7(a, e, j):
    m = _m_R7(a)
    j.require(m["band_share"] > m["band_uniform_share"],
              f"share of top-k in layers 4-10 {m['band_share']:.4f} > uniform {m['band_uniform_share']:.4f}")
    pointwise = {k.split(".", 1)[1]: v for k, v in m.items() if k.startswith("enrichment.")}
    best = max(pointwise, key=lambda n: pointwise[n], default=None)
    j.require(best is not None and pointwise[best] > 1,
              "some pointwise_conv component enriched > 1: " +
              (", ".join(f"{n} {v:.3f}" for n, v in sorted(pointwise.items())) or "none in the artifact"))
    j.require(m["attention_enrichment"] < 1, f"self_attn.linear_* enrichment {m['attention_enrichment']:.3f} < 1")
    return m


def _h_R7(m, ci, p, tol, a, cells):
    lo, hi = p.get("layers", [None, None])
    layers = ((a.get("distribution") or {}).get("speech_encoder") or {}).get("by_layer")
    ours = NA
    if layers:
        peak = max(range(len(layers)), key=lambda i: layers[i])
        ours = f"peak layer {peak}; {frac(at(m, 'band_share'))} in {lo}–{hi}"
    return {"paper": f"peak layers {lo}–{hi}", "ours": ours}


R7 = Claim("R7", "Speech encoder: top-k in middle layers", figure="distribution", measure=_m_R7, check=_c_R7,
           headline=_h_R7)


# ----------------------------------------------------------------------------- R8

def _m_R8(a):
    by_layer = a["distribution"]["text_encoder"]["by_layer"]
    return {"argmax_layer": float(np.argmax(by_layer)),
            "layer0_share": float(by_layer[0] / sum(by_layer)) if sum(by_layer) else float("nan")}


def _c_R8(a, e, j):
    m = _m_R8(a)
    j.require(m["argmax_layer"] == e["paper"]["peak_layer"],
              f"argmax layer of text-encoder top-k {int(m['argmax_layer'])} == {e['paper']['peak_layer']}")
    return m


def _h_R8(m, ci, p, tol, a, cells):
    v = finite(at(m, "argmax_layer"))
    return {"paper": f"peak layer {p.get('peak_layer', 0)}",
            "ours": NA if v is None else f"peak layer {v:.0f} ({frac(at(m, 'layer0_share'))} at layer 0)"}


R8 = Claim("R8", "Text encoder: top-k peak at the first layer", figure="distribution", measure=_m_R8, check=_c_R8,
           headline=_h_R8)


# ----------------------------------------------------------------------------- R9

R9_SELF = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn_layer_norm")


R9_CROSS = ("cross_attention.k_proj", "cross_attention.v_proj", "cross_attention.out_proj")


def _m_R9(a):
    out = {}
    dec = a["distribution"]["text_decoder"]
    for t in ("1", "11"):
        for modality in ("speech", "text"):
            d = dec[t][modality]
            out[f"self_share.{modality}.{t}"] = component_share(d, R9_SELF)
            out[f"cross_share.{modality}.{t}"] = component_share(d, R9_CROSS)
    return out


def _c_R9(a, e, j):
    m = _m_R9(a)
    for mod in ("speech", "text"):
        s, c = m[f"self_share.{mod}.1"], m[f"cross_share.{mod}.1"]
        j.require(s > c, f"{mod}, t=1: self-attention share {s:.3f} > cross-attention share {c:.3f}")
        s, c = m[f"self_share.{mod}.11"], m[f"cross_share.{mod}.11"]
        j.require(c > s, f"{mod}, t=11: cross-attention share {c:.3f} > self-attention share {s:.3f}")
    return m


def _h_R9(m, ci, p, tol, a, cells):
    return {"paper": "t=1 mostly self, t=11 mostly cross",
            "ours": (f"t=1 self {frac(at(m, 'self_share.speech.1'))} / cross {frac(at(m, 'cross_share.speech.1'))}; "
                     f"t=11 self {frac(at(m, 'self_share.speech.11'))} / cross {frac(at(m, 'cross_share.speech.11'))}"
                     " (speech)")}


R9 = Claim("R9", "Decoder: self-attn at t=1, cross-attn at t=11", figure="distribution", measure=_m_R9, check=_c_R9,
           headline=_h_R9)


CLAIMS = (R1, R2, R3, R4, R5, R6, R7, R8, R9)
