"""The paper's claims as pure checks on an analysis dict (the ``analysis.json`` artifact).

Two ways to judge one claim:

- ``check(claim_id, analysis, registry_entry) -> Verdict``: the PAPER's bounds (profile
  ``paper``). Level claims compare within the registry's tolerance, qualitative claims follow
  the operational definition written in ``fixtures/claims_registry.json``. Each ordering is
  judged the way the paper's sentence can be read, as the entry's ``ordering_decision`` says:
  on separated bootstrap CIs (``lower(A) > upper(B)``) where the paper states a large
  difference as a finding; on point estimates where it reports point estimates of a small or
  qualified difference ("stable", "partially recovers", every pair of a table); and on an
  interval-based aggregate (the mean over pairs or over k) where the sentence is about the
  trend as a whole.
- ``measurements(claim_id, analysis) -> dict``: the numbers a claim looks at, compared with
  recorded regression baselines (profile ``tiny``) by ``engine.tools.baselines``;
  ``baseline_parts`` names the ratios a baseline compares through their parts.

The paper's numbers are SeamlessM4T v2's. On another architecture (a speech LLM:
engine.model.speech_llm) ``information_only`` says why its bounds are information, not verdicts,
and the paper profile reports them without asserting them.

Units follow the registry: overlap and Spearman figures are fractions, control rates and
fastText probabilities are percent; steps are the strings ``"1"``, ``"6"``, ``"11"``.
A malformed or incomplete artifact gives a failing Verdict whose detail names the missing
key (``check`` never raises for missing data; ``measurements`` raises ``KeyError``).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine.files import REPO_ROOT
from engine.science.intervals import mean_difference_ci, ratio_se, se_from_ci

REGISTRY_PATH = REPO_ROOT / "fixtures" / "claims_registry.json"
CLAIM_IDS = ("R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8", "R9",
             "S1", "S2", "S3", "S4", "S5", "S6", "T1", "T3", "T4")
#: model types the paper's numbers were measured on (v1 shares the architecture the claims read)
PAPER_MODEL_TYPES = ("seamless_m4t_v2", "seamless_m4t")


def information_only(analysis: dict) -> str | None:
    """Why the paper's bounds cannot judge ``analysis``'s model, or None when they can.

    The model type comes from ``analysis["meta"]["model_type"]``; an artifact without it
    (written before it was recorded) is taken as SeamlessM4T's.
    """
    model_type = (analysis.get("meta") or {}).get("model_type")
    if model_type is None or model_type in PAPER_MODEL_TYPES:
        return None
    return (f"the paper's numbers are SeamlessM4T v2's; this run's model is a {model_type} speech LLM (a "
            "decoder-only LM fed by an audio encoder, step 1 = its last prompt position, not a language tag), "
            "so the paper's statements are information here, not verdicts")


@dataclass
class Verdict:
    claim_id: str
    measured: dict
    ci: dict | None
    paper: dict
    tolerance: Any
    passed: bool
    detail: str
    failures: list[str] = field(default_factory=list)
    #: paper cells or conditions naming steering pairs this run did not steer
    not_applicable: list[str] = field(default_factory=list)
    #: False when every condition named such a pair: nothing was judged (and ``passed`` is False)
    applicable: bool = True

    def to_json(self) -> dict:
        return asdict(self)


def load_registry(path: str | Path = REGISTRY_PATH) -> dict:
    """The claims registry: ``{"claims": {id: entry}, ...}``."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


# ----------------------------------------------------------------------------- helpers

class _Judge:
    """Collects named conditions; a claim passes when all hold. A condition about a steering
    pair the run did not steer is not applicable: recorded, neither held nor failed."""

    def __init__(self):
        self.failures: list[str] = []
        self.held: list[str] = []
        self.not_applicable: list[str] = []

    def require(self, ok: bool, text: str) -> None:
        (self.held if ok else self.failures).append(text)

    def absent(self, text: str) -> None:
        self.not_applicable.append(text)


def _f(x) -> float:
    return float("nan") if x is None else float(x)


def _steps(analysis: dict) -> list[str]:
    return sorted(analysis["overlap"], key=int)


def _ci(entry: dict, key: str) -> tuple[float, float]:
    """An interval of the artifact as floats; NaN bounds where it was withheld (None)."""
    ci = entry[key]
    if ci is None:
        return float("nan"), float("nan")
    return _f(ci[0]), _f(ci[1])


def _difference(analysis: dict, stat: str, pair: str) -> tuple[float, float, float]:
    """``(estimate, lo, hi)`` of ``stat(a) - stat(b)`` for ``pair = "a-b"`` from the compare
    stage's ``step_differences`` (one set of half-samples for both steps); NaN where the
    artifact has none (an ordering judged on it then fails)."""
    d = analysis.get("step_differences", {}).get(stat, {}).get(pair)
    if d is None:
        return float("nan"), float("nan"), float("nan")
    lo, hi = _ci(d, "ci")
    return _f(d["estimate"]), lo, hi


def _greater_ci(a_ci, b_ci) -> bool:
    """'A > B' on confidence intervals: the lower bound of A exceeds the upper bound of B."""
    return a_ci[0] > b_ci[1]


def _rows(analysis: dict, intervention: str = "median") -> list[dict]:
    return [r for r in analysis["steering"]["rows"] if r.get("intervention", "median") == intervention]


def _find_row(analysis: dict, src: str, tgt: str, task: str, step, intervention: str = "median") -> dict | None:
    """The steering row of (src, tgt, task, step, intervention), or None. The unsteered
    baseline ("none") has step None."""
    for r in _rows(analysis, intervention):
        if r["src"] != src or r["tgt"] != tgt or r["task"] != task:
            continue
        if (r["step"] is None and step is None) or (
                r["step"] is not None and step is not None and int(r["step"]) == int(step)):
            return r
    return None


def _row(analysis: dict, src: str, tgt: str, task: str, step: int | str, intervention: str = "median") -> dict:
    r = _find_row(analysis, src, tgt, task, step, intervention)
    if r is None:
        raise KeyError(f"steering row src={src} tgt={tgt} task={task} step={step} intervention={intervention}")
    return r


def _row_ci(r: dict) -> tuple[float, float]:
    ci = r.get("control_rate_ci")
    if not ci:
        return float("nan"), float("nan")
    return _f(ci[0]), _f(ci[1])


def _pairs(analysis: dict) -> list[tuple[str, str]]:
    seen = []
    for r in _rows(analysis):
        key = (r["src"], r["tgt"])
        if key not in seen:
            seen.append(key)
    return seen


def _steered(analysis: dict) -> set[tuple[str, str]]:
    """The (src, tgt) pairs the run steered: its steering config, else its rows."""
    cfg = (analysis.get("steering") or {}).get("config") or {}
    if cfg.get("pairs"):
        return {(a, b) for a, b in cfg["pairs"]}
    return set(_pairs(analysis))


def _share(matrix, langs, a, b) -> float:
    O = np.asarray(matrix, dtype=float)
    i, j = langs.index(a), langs.index(b)
    total = O.sum()
    return float((O[i, j] + O[j, i]) / total) if total > 0 else float("nan")


def _enrichment(dist: dict, match: Callable[[str], bool]) -> float:
    counts, sizes = dist["by_component"], dist["component_sizes"]
    n_count = sum(counts.values())
    n_size = sum(sizes.values())
    c = sum(v for k, v in counts.items() if match(k))
    s = sum(v for k, v in sizes.items() if match(k))
    if n_count == 0 or s == 0:
        return float("nan")
    return (c / n_count) / (s / n_size)


def _is_pointwise(name: str) -> bool:
    return "pointwise_conv" in name


def _is_speech_attention(name: str) -> bool:
    return name.split(".")[-1] in ("linear_q", "linear_k", "linear_v", "linear_out") and "self_attn" in name


def _component_share(dist: dict, names) -> float:
    counts = dist["by_component"]
    total = sum(counts.values())
    return float(sum(counts.get(n, 0) for n in names) / total) if total else float("nan")


# ----------------------------------------------------------------------------- measurements

def _m_R1(a):
    out = {}
    for t in _steps(a):
        o = a["overlap"][t]
        out[f"diagonal_ratio.{t}"] = _f(o["diagonal_ratio"])
        lo, hi = _ci(o, "diagonal_ratio_ci")
        out[f"diagonal_ratio_ci_lo.{t}"], out[f"diagonal_ratio_ci_hi.{t}"] = lo, hi
    _differences(a, "diagonal_ratio", out)
    return out


def _differences(a, stat, out, prefix="diff"):
    for t in ("6", "11"):
        pair = f"1-{t}"
        d, lo, hi = _difference(a, stat, pair)
        out[f"{prefix}.{pair}"], out[f"{prefix}_ci_lo.{pair}"], out[f"{prefix}_ci_hi.{pair}"] = d, lo, hi


def _m_R2(a):
    out = {}
    for t in _steps(a):
        out[f"perm_p.{t}"] = _f(a["overlap"][t]["perm_p"])
        out[f"perm_stat.{t}"] = _f(a["overlap"][t]["perm_stat"])
    return out


def _m_R3(a):
    out = {}
    for t in _steps(a):
        o = a["overlap"][t]
        out[f"total.{t}"] = _f(o["total"])
        out[f"total_ci_lo.{t}"], out[f"total_ci_hi.{t}"] = _ci(o, "total_ci")
    _differences(a, "total", out)
    return out


R4_PAIRS = (("fra", "spa"), ("jpn", "cmn"))


def _m_R4(a):
    out = {}
    for t in _steps(a):
        o = a["overlap"][t]
        for x, y in R4_PAIRS:
            if x in o["langs"] and y in o["langs"]:  # a run without a pair's languages cannot measure it
                out[f"share.{x}-{y}.{t}"] = _share(o["matrix"], list(o["langs"]), x, y)
    return out


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
    for t in _steps(a):
        o = a["overlap"][t]
        out[f"concentration.{t}"] = _f(o["spearman_diag_concentration"])
        R = np.asarray(o["spearman"], dtype=float)
        out[f"spearman_trace.{t}"], out[f"spearman_sum.{t}"] = float(np.trace(R)), float(R.sum())
        lo, hi = _ci(o, "spearman_diag_concentration_ci")
        out[f"concentration_ci_lo.{t}"], out[f"concentration_ci_hi.{t}"] = lo, hi
        w, b = _typology(o["spearman"], list(o["langs"]), R5_GROUPS)
        out[f"rho_within.{t}"], out[f"rho_between.{t}"] = w, b
    conc = [out[f"concentration.{t}"] for t in _steps(a)]
    out["concentration_spread"] = float(max(conc) - min(conc)) if conc else float("nan")
    return out


def _m_R6(a):
    ks = a["k_sweep"]["ks"]
    cis = a["k_sweep"].get("diagonal_ratio_ci") or {}
    out = {}
    for t, values in a["k_sweep"]["diagonal_ratio"].items():
        if len(values) != len(ks):
            raise KeyError(f"k_sweep.diagonal_ratio['{t}'] has {len(values)} values for {len(ks)} ks")
        for i, (k, v) in enumerate(zip(ks, values)):
            out[f"ratio.k{k}.{t}"] = _f(v)
            if t in cis:
                lo, hi = cis[t][i] if cis[t][i] is not None else (None, None)  # withheld
                out[f"ratio_ci_lo.k{k}.{t}"], out[f"ratio_ci_hi.k{k}.{t}"] = _f(lo), _f(hi)
    _differences(a, "sweep_mean", out, prefix="sweep_mean_diff")
    return out


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
        "attention_enrichment": _enrichment(d, _is_speech_attention),
    }
    # "certain pointwise convolutional submodules": each pointwise convolution on its own
    for name in sorted(n for n in d["component_sizes"] if _is_pointwise(n)):
        out[f"enrichment.{name}"] = _enrichment(d, lambda c, name=name: c == name)
    return out


def _m_R8(a):
    by_layer = a["distribution"]["text_encoder"]["by_layer"]
    return {"argmax_layer": float(np.argmax(by_layer)),
            "layer0_share": float(by_layer[0] / sum(by_layer)) if sum(by_layer) else float("nan")}


R9_SELF = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn_layer_norm")
R9_CROSS = ("cross_attention.k_proj", "cross_attention.v_proj", "cross_attention.out_proj")


def _m_R9(a):
    out = {}
    dec = a["distribution"]["text_decoder"]
    for t in ("1", "11"):
        for modality in ("speech", "text"):
            d = dec[t][modality]
            out[f"self_share.{modality}.{t}"] = _component_share(d, R9_SELF)
            out[f"cross_share.{modality}.{t}"] = _component_share(d, R9_CROSS)
    return out


def _m_control(a, step_filter=None, task_filter=None):
    out = {}
    for r in _rows(a):
        if step_filter is not None and int(r["step"]) not in step_filter:
            continue
        if task_filter is not None and r["task"] not in task_filter:
            continue
        out[f"cr.{r['src']}-{r['tgt']}.{r['task']}.{int(r['step'])}"] = _f(r["control_rate"])
    return out


def _m_S1(a):
    return _m_control(a, step_filter={1})


def _m_S2(a):
    return _m_control(a, step_filter={6}, task_filter={"ASR"})


#: S3's references for "transfer": the unsteered run ("none", step None) and, when the
#: artifact has it, the same number of random neurons at t=6 ("random").
S3_REFERENCES = (("none", None), ("random", 6))


def _m_S3(a):
    out = _m_control(a, step_filter={1, 6}, task_filter={"TR"})
    for src, tgt in _pairs(a):
        for kind, step in (("median", 6),) + S3_REFERENCES:
            r = _find_row(a, src, tgt, "TR", step, kind)
            if r is None:
                continue
            key = f"{src}-{tgt}.TR." + ("none" if kind == "none" else f"{step}" + ("" if kind == "median" else f".{kind}"))
            if kind != "median":
                out[f"cr.{key}"] = _f(r["control_rate"])
            out[f"cr_ci_lo.{key}"], out[f"cr_ci_hi.{key}"] = _row_ci(r)
    return out


def _m_S4(a):
    out = _m_control(a, step_filter={6, 11}, task_filter={"ASR"})
    pairs = []
    for src, tgt in _pairs(a):
        r6, r11 = _find_row(a, src, tgt, "ASR", 6), _find_row(a, src, tgt, "ASR", 11)
        if r6 is None or r11 is None:
            continue
        for t, r in (("6", r6), ("11", r11)):
            out[f"cr_ci_lo.{src}-{tgt}.ASR.{t}"], out[f"cr_ci_hi.{src}-{tgt}.ASR.{t}"] = _row_ci(r)
        pairs.append((_f(r11["control_rate"]), se_from_ci(r11.get("control_rate_ci")),
                      _f(r6["control_rate"]), se_from_ci(r6.get("control_rate_ci"))))
    if pairs:
        a11, se11, a6, se6 = zip(*pairs)
        d, lo, hi = mean_difference_ci(a11, se11, a6, se6)
        out["mean_rise.6-11"], out["mean_rise_ci_lo.6-11"], out["mean_rise_ci_hi.6-11"] = d, lo, hi
    return out


def _effect_ratio_spread(a, p) -> float:
    """Delta-method standard error of one effect-ratio pair, from its rows' CIs."""
    tr = _find_row(a, p["src"], p["tgt"], "TR", p["step"])
    asr = _find_row(a, p["src"], p["tgt"], "ASR", p["step"])
    if tr is None or asr is None:
        return float("nan")
    return ratio_se(_f(p["cr_tr"]), se_from_ci(tr.get("control_rate_ci")),
                    _f(p["cr_asr"]), se_from_ci(asr.get("control_rate_ci")))


def _m_S5(a):
    er = a["steering"]["effect_ratio"]
    out = {f"mean.{t}": _f(v) for t, v in er["mean"].items()}
    valid: dict[str, list[tuple[float, float]]] = {}
    for p in er["pairs"]:
        out[f"ratio.{p['src']}-{p['tgt']}.{int(p['step'])}"] = _f(p.get("ratio"))
        if p.get("ratio") is not None:
            valid.setdefault(str(int(p["step"])), []).append((_f(p["ratio"]), _effect_ratio_spread(a, p)))
    if valid.get("6") and valid.get("11"):
        # the mean over the valid pairs of each step, as the paper's 0.36 and 0.49
        m6, m11 = (float(np.mean([r for r, _ in valid[t]])) for t in ("6", "11"))
        se6, se11 = (float(np.sqrt(sum(s ** 2 for _, s in valid[t])) / len(valid[t])) for t in ("6", "11"))
        d, lo, hi = mean_difference_ci([m11], [se11], [m6], [se6])
        out["mean_rise.6-11"], out["mean_rise_ci_lo.6-11"], out["mean_rise_ci_hi.6-11"] = d, lo, hi
    return out


def _m_S6(a):
    return {f"ft_tgt.{r['src']}-{r['tgt']}.{r['task']}.{int(r['step'])}": _f(r["ft_tgt"]) for r in _rows(a)}


def _m_T1(a):
    """Each row's shares by its own control metric: both script classes of a cross-script pair
    (``latin.*`` and ``cjk.*`` for the paper's), the language-ID rate (``lid.*``) of a
    same-script one, as the steer stage scored it (``steering_eval.score_outputs``)."""
    out = {}
    for r in _rows(a):
        key = f"{r['src']}-{r['tgt']}.{r['task']}.{int(r['step'])}"
        if r.get("control_by") == "langid":
            out[f"lid.{key}"] = _f(r["control_rate"])
            continue
        src_cls, tgt_cls = _classes(r)
        out[f"{src_cls}.{key}"], out[f"{tgt_cls}.{key}"] = _f(r.get(src_cls)), _f(r.get(tgt_cls))
    return out


def _classes(r: dict) -> tuple[str, str]:
    from engine.science.scripts import pair_scripts

    return pair_scripts(r["src"], r["tgt"])


def _m_T3(a):
    out = {}
    for p in a["steering"]["effect_ratio"]["pairs"]:
        key = f"{p['src']}-{p['tgt']}.{int(p['step'])}"
        out[f"cr_asr.{key}"], out[f"cr_tr.{key}"] = _f(p["cr_asr"]), _f(p["cr_tr"])
        out[f"ratio.{key}"] = _f(p.get("ratio"))
    return out


def _m_T4(a):
    out = {}
    for r in _rows(a):
        key = f"{r['src']}-{r['tgt']}.{r['task']}.{int(r['step'])}"
        out[f"ft_src.{key}"], out[f"ft_tgt.{key}"] = _f(r["ft_src"]), _f(r["ft_tgt"])
    return out


_MEASURE: dict[str, Callable[[dict], dict]] = {
    "R1": _m_R1, "R2": _m_R2, "R3": _m_R3, "R4": _m_R4, "R5": _m_R5, "R6": _m_R6,
    "R7": _m_R7, "R8": _m_R8, "R9": _m_R9, "S1": _m_S1, "S2": _m_S2, "S3": _m_S3,
    "S4": _m_S4, "S5": _m_S5, "S6": _m_S6, "T1": _m_T1, "T3": _m_T3, "T4": _m_T4,
}


def measurements(claim_id: str, analysis: dict) -> dict[str, float]:
    """The numbers claim ``claim_id`` looks at, as a flat ``{name: float}`` (NaN for null).

    Used for tiny-profile regression baselines. Raises ``KeyError`` naming the missing
    artifact key when the analysis lacks what the claim needs, ``ValueError`` for an
    unknown claim id.
    """
    if claim_id not in _MEASURE:
        raise ValueError(f"unknown claim id {claim_id!r}; known: {', '.join(CLAIM_IDS)}")
    return _MEASURE[claim_id](analysis)


# ----------------------------------------------------------------------------- paper checks

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


def _c_R2(a, e, j):
    m = _m_R2(a)
    alpha = e["tolerance"]["alpha"]
    steps = _steps(a)
    for t in steps:
        j.require(m[f"perm_p.{t}"] < alpha, f"perm_p(t={t}) {m[f'perm_p.{t}']:.4g} < {alpha}")
    for t in steps:
        if t == "1":
            continue
        j.require(m["perm_p.1"] <= m[f"perm_p.{t}"], f"perm_p(t=1) {m['perm_p.1']:.4g} <= perm_p(t={t}) {m[f'perm_p.{t}']:.4g}")
        j.require(m["perm_stat.1"] >= m[f"perm_stat.{t}"], f"perm_stat(t=1) {m['perm_stat.1']:.4f} >= perm_stat(t={t}) {m[f'perm_stat.{t}']:.4f}")
    return m


def _c_R3(a, e, j):
    m = _m_R3(a)
    for t in ("6", "11"):
        d, hi = m[f"diff.1-{t}"], m[f"diff_ci_hi.1-{t}"]
        j.require(hi < 0, f"total(t=1) - total(t={t}) = {d:.1f}, interval upper bound {hi:.1f} < 0")
    return m


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
    for t in _steps(a):
        w, b = m[f"rho_within.{t}"], m[f"rho_between.{t}"]
        j.require(w > b, f"t={t}: mean within-group rho {w:.4f} > mean between-group rho {b:.4f}")
    return m


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


def _c_R8(a, e, j):
    m = _m_R8(a)
    j.require(m["argmax_layer"] == e["paper"]["peak_layer"],
              f"argmax layer of text-encoder top-k {int(m['argmax_layer'])} == {e['paper']['peak_layer']}")
    return m


def _c_R9(a, e, j):
    m = _m_R9(a)
    for mod in ("speech", "text"):
        s, c = m[f"self_share.{mod}.1"], m[f"cross_share.{mod}.1"]
        j.require(s > c, f"{mod}, t=1: self-attention share {s:.3f} > cross-attention share {c:.3f}")
        s, c = m[f"self_share.{mod}.11"], m[f"cross_share.{mod}.11"]
        j.require(c > s, f"{mod}, t=11: cross-attention share {c:.3f} > self-attention share {s:.3f}")
    return m


def _require_rows(j, m, what):
    j.require(bool(m), f"artifact has {what}")


def _c_S1(a, e, j):
    m = _m_S1(a)
    _require_rows(j, m, "steering rows at step 1")
    bound = e["tolerance"]["max_control_rate"]
    for k, v in m.items():
        j.require(v < bound, f"{k} = {v:.2f} < {bound}")
    return m


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


#: The paper's S2 pairs: Latin-script sources, CJK targets (and back).
S2_LATIN, S2_CJK = ("deu", "fra"), ("cmn", "jpn")


def _c_S3(a, e, j):
    m = _m_S3(a)
    lo = e["paper"]["min"] - e["tolerance"]["abs"]
    hi = e["paper"]["max"] + e["tolerance"]["abs"]
    shift = e["tolerance"]["min_shift"]
    pairs = _pairs(a)
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


def _c_S4(a, e, j):
    m = _m_S4(a)
    pairs = _pairs(a)
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
    for src, tgt in _pairs(a):
        r6, r11 = m.get(f"ratio.{src}-{tgt}.6", float("nan")), m.get(f"ratio.{src}-{tgt}.11", float("nan"))
        if math.isnan(r6) or math.isnan(r11):
            continue
        both += 1
        j.require(r11 > r6, f"{src}-{tgt} effect ratio at t=11 {r11:.3f} > at t=6 {r6:.3f}")
    j.require(both > 0, f"pairs valid at both t=6 and t=11: {both} > 0")
    return m


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


def _table_rows(a, e, j, cols):
    """Cells of a per-row steering table (Tables 1 and 4): each column within ±tolerance."""
    tol = e["tolerance"]["abs"]
    m = {}
    steered = _steered(a)
    for c in e["paper"]["cells"]:
        key = f"{c['src']}-{c['tgt']}.{c['task']}.{c['step']}"
        if (c["src"], c["tgt"]) not in steered:
            j.absent(f"{key}: pair {c['src']}->{c['tgt']} not steered by this run")
            continue
        try:
            r = _row(a, c["src"], c["tgt"], c["task"], c["step"])
        except KeyError as exc:
            j.require(False, str(exc))
            continue
        for col in cols:
            v = _f(r[col])
            m[f"{col}.{key}"] = v
            j.require(abs(v - c[col]) <= tol, f"{col} {key}: {v:.2f} vs paper {c[col]} (±{tol})")
    return m


def _c_T1(a, e, j):
    return _table_rows(a, e, j, ("latin", "cjk"))


def _c_T3(a, e, j):
    tr, tq = e["tolerance"]["abs_rate"], e["tolerance"]["abs_ratio"]
    pairs = {(p["src"], p["tgt"], int(p["step"])): p for p in a["steering"]["effect_ratio"]["pairs"]}
    m = {}
    steered = _steered(a)
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
            v = _f(p.get(col))
            m[f"{col}.{key}"] = v
            j.require(abs(v - c[col]) <= tol, f"{col} {key}: {v:.3f} vs paper {c[col]} (±{tol})")
    return m


def _c_T4(a, e, j):
    return _table_rows(a, e, j, ("ft_src", "ft_tgt"))


_CHECK = {
    "R1": _c_R1, "R2": _c_R2, "R3": _c_R3, "R4": _c_R4, "R5": _c_R5, "R6": _c_R6,
    "R7": _c_R7, "R8": _c_R8, "R9": _c_R9, "S1": _c_S1, "S2": _c_S2, "S3": _c_S3,
    "S4": _c_S4, "S5": _c_S5, "S6": _c_S6, "T1": _c_T1, "T3": _c_T3, "T4": _c_T4,
}


def _ci_view(claim_id: str, m: dict) -> dict | None:
    """The CIs a claim's verdict was judged on, ``{name: [lo, hi]}``, or None."""
    out = {}
    for k, v in m.items():
        if "_ci_lo." in k:
            base, rest = k.split("_ci_lo.")
            out[f"{base}.{rest}"] = [v, m.get(f"{base}_ci_hi.{rest}")]
    return out or None


def check(claim_id: str, analysis: dict, registry_entry: dict) -> Verdict:
    """Judge one claim against the PAPER's bounds on ``analysis``.

    Returns a Verdict; ``passed`` is True only if every condition of the claim's
    operational definition (registry ``operational``) holds. NaN compares false, so a
    null measurement fails. A missing artifact key fails the claim with a detail naming it.
    """
    if claim_id not in _CHECK:
        raise ValueError(f"unknown claim id {claim_id!r}; known: {', '.join(CLAIM_IDS)}")
    judge = _Judge()
    try:
        measured = _CHECK[claim_id](analysis, registry_entry, judge)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        measured = {}
        judge.require(False, f"artifact lacks what {claim_id} needs: {type(exc).__name__}: {exc}")
    passed = not judge.failures
    applicable = bool(judge.held or judge.failures or not judge.not_applicable)
    if not applicable:
        passed = False
        detail = (f"{claim_id} not applicable: " + "; ".join(judge.not_applicable[:3])
                  + (" ..." if len(judge.not_applicable) > 3 else ""))
    elif passed:
        detail = f"{claim_id} holds: " + "; ".join(judge.held[:6]) + (" ..." if len(judge.held) > 6 else "")
    else:
        detail = (f"{claim_id} fails ({len(judge.failures)} of {len(judge.failures) + len(judge.held)} "
                  f"conditions): " + "; ".join(judge.failures[:8]) + (" ..." if len(judge.failures) > 8 else ""))
    if applicable and judge.not_applicable:
        detail += (f" [{len(judge.not_applicable)} not applicable: " + "; ".join(judge.not_applicable[:2])
                   + (" ..." if len(judge.not_applicable) > 2 else "") + "]")
    return Verdict(claim_id=claim_id, measured=measured, ci=_ci_view(claim_id, measured),
                   paper=registry_entry.get("paper", {}), tolerance=registry_entry.get("tolerance"),
                   passed=passed, detail=detail, failures=judge.failures, not_applicable=judge.not_applicable,
                   applicable=applicable)


# ----------------------------------------------------------------------------- baselines

def baseline_parts(claim_id: str, key: str) -> tuple[str, ...] | None:
    """The measurements a regression baseline compares instead of ``key``, or None.

    R5's Spearman concentration ``concentration.t`` is ``spearman_trace.t / spearman_sum.t``,
    and ``concentration_spread`` is a function of those ratios. The sum of a correlation matrix
    can be near zero (on the tiny model the ratio runs from 0.32 to -0.01), where the ratio
    multiplies its parts' noise by ``1 / |sum|``; the parts determine it, so comparing them loses
    nothing. The ratio's bootstrap interval has no parts and is compared as it is.
    """
    if claim_id != "R5":
        return None
    if key.startswith("concentration.") and "_ci" not in key:
        t = key.split(".", 1)[1]
        return (f"spearman_trace.{t}", f"spearman_sum.{t}")
    if key == "concentration_spread":
        return ("spearman_trace.*", "spearman_sum.*")
    return None
