"""``python -m engine bench coverage``: do the compare stage's intervals cover, and are the
ordering claims' verdicts right, on planted populations whose truth is known?

Population (``planted_population``). L languages, N neurons, steps 1, 6, 11. In each modality
and language, ``k`` neurons are selective at each step: their activation's mean is raised by an
effect drawn from ``U(effect_lo, effect_hi)`` (in units of the within-class SD). Some of them are
shared across modalities: per language ``diag[t]`` neurons selective for that language in both
speech and text, and per ordered pair ``off[t]`` neurons selective for speech language i and text
language j. Every neuron also has a small background profile per language (SD ``background``,
shared by the modalities), so every AP is distinct and every rank statistic is defined.
Rows: sentence s in language l has content shared by its translations and by its two
modalities (share ``content``), which is what makes paired data hard to resample.

Truth: each neuron's activation is Gaussian per (modality, language) with unit variance, so the
population AP of every neuron is an integral (``population_ap``), and the truth of each statistic
is the statistic of the population AP vectors.

Per replicate: one sample of ``n`` sentences per language, ``crossmodal.compare_steps`` (the
compare stage's code), then R1–R3 judged by the claims suite's own judging functions.
Reported: coverage of every statistic's 95% interval (with a one-sided 95% Clopper–Pearson lower
bound), containment of the estimate, power (paper-like population: R1–R3 hold) and size
(null population: every language pair shares equally, R1/R2 must not hold). Last line: JSON.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr
from scipy.stats import beta as beta_dist

from engine.outputs import claims
from engine.science import crossmodal as cm
from engine.science import overlap as ov

STEPS = ("1", "6", "11")
#: Paper-like population: diagonal ratio ~56 / 34 / 36 % at t = 1 / 6 / 11, totals rising.
PAPER_LIKE = {"diag": {"1": 10, "6": 8, "11": 9}, "off": {"1": 2, "6": 4, "11": 4}}
#: Null: language pairs share as much off the diagonal as on it (diagonal ratio 1/L at every step).
NULL = {"diag": {"1": 4, "6": 4, "11": 4}, "off": {"1": 4, "6": 4, "11": 4}}


@dataclass
class Population:
    means: dict  # {step: (speech [L, N], text [L, N])}
    n_langs: int
    n_neurons: int
    content: float


def planted_population(shape: dict, *, n_langs: int = 5, n_neurons: int = 4000, k: int = 40,
                       effect=(0.3, 1.2), background: float = 0.05, content: float = 0.5,
                       seed: int = 0) -> Population:
    """Class means ``[L, N]`` per step and modality; ``shape`` = ``{"diag": {t: d}, "off": {t: o}}``."""
    rng = np.random.default_rng(seed)
    L, N = n_langs, n_neurons
    base = rng.normal(0.0, background, (L, N))
    means = {}
    for t in STEPS:
        d, o = shape["diag"][t], shape["off"][t]
        if d + (L - 1) * o > k:
            raise ValueError(f"step {t}: {d} + {L - 1} x {o} shared neurons exceed k = {k}")
        mu_s, mu_x = base.copy(), base.copy()
        free = list(rng.permutation(N))

        def take(n):
            return [free.pop() for _ in range(n)]

        for i in range(L):
            for j in range(L):
                for u in take(d if i == j else o):
                    mu_s[i, u] += rng.uniform(*effect)
                    mu_x[j, u] += rng.uniform(*effect)
        for m in (mu_s, mu_x):  # the rest of each (modality, language)'s k selective neurons
            for i in range(L):
                have = int(np.count_nonzero(m[i] - base[i]))
                for u in take(k - have):
                    m[i, u] += rng.uniform(*effect)
        means[t] = (mu_s, mu_x)
    return Population(means, L, N, content)


def population_ap(mu: np.ndarray, grid: int = 801) -> np.ndarray:
    """AP ``[L, N]`` of unit-variance Gaussian classes with means ``mu`` ``[L, N]`` and equal
    priors, on infinitely many examples: ``E_pos[precision(x)]`` by the trapezoid rule."""
    L, N = mu.shape
    x = np.linspace(mu.min() - 7, mu.max() + 7, grid)
    surv = ndtr(mu[:, :, None] - x[None, None, :])  # P(X > x) per class, [L, N, G]
    dens = np.exp(-0.5 * (x[None, None, :] - mu[:, :, None]) ** 2) / np.sqrt(2 * np.pi)
    precision = surv / surv.sum(axis=0, keepdims=True)
    return np.trapezoid(precision * dens, x, axis=2)


def truth(pop: Population, k: int, ks) -> dict:
    """The population value of every statistic the claims read, per step."""
    out = {}
    for t in STEPS:
        ap_s, ap_x = (population_ap(m) for m in pop.means[t])
        O = cm.overlap_sweep(ap_s, ap_x, [k, *ks])
        R = ov.spearman_matrix(ap_s, ap_x)
        out[t] = {"diagonal_ratio": ov.diagonal_ratio(O[0]), "total": float(O[0].sum()),
                  "spearman_diag_concentration": ov.diagonal_concentration(R),
                  "spearman_diag_concentration_clipped": ov.diagonal_concentration(R, clip_negative=True),
                  "sweep": [ov.diagonal_ratio(o) for o in O[1:]]}
        out[t]["sweep_mean"] = float(np.mean(out[t]["sweep"]))
    return out


def sample(pop: Population, n: int, rng) -> tuple[dict, dict, list, list]:
    """One study: ``n`` sentences per language, every step, both modalities, float32."""
    L, N, c = pop.n_langs, pop.n_neurons, pop.content
    shared = rng.standard_normal((n, 1, N), dtype=np.float32)  # a sentence's content, all languages
    own = rng.standard_normal((n, L, N), dtype=np.float32)  # its content in one language
    content = np.sqrt(c) * (np.sqrt(0.5) * shared + np.sqrt(0.5) * own)  # both modalities
    speech, text = {}, {}
    for t in STEPS:
        mu_s, mu_x = pop.means[t]
        for out, mu in ((speech, mu_s), (text, mu_x)):
            noise = np.sqrt(1 - c) * rng.standard_normal((n, L, N), dtype=np.float32)
            out[t] = (content + noise + mu[None].astype(np.float32)).reshape(n * L, N)
    langs = [f"l{i}" for _ in range(n) for i in range(L)]
    sids = [f"s{s}" for s in range(n) for _ in range(L)]
    return speech, text, langs, sids


def _lower_bound(hits: int, n: int) -> float:
    """One-sided 95% Clopper-Pearson lower bound of a proportion."""
    return float(beta_dist.ppf(0.05, hits, n - hits + 1)) if hits else 0.0


def _verdicts(analysis: dict) -> dict:
    registry = claims.load_registry()["claims"]
    return {c: claims.check(c, analysis, registry[c]).passed for c in ("R1", "R2", "R3")}


def study(shape: dict, *, replicates: int, n: int, n_neurons: int, k: int, ks, n_boot: int, seed: int,
          verbose: bool = True) -> dict:
    """Coverage and verdict rates of ``replicates`` samples of one planted population."""
    pop = planted_population(shape, n_neurons=n_neurons, k=k, seed=seed)
    true = truth(pop, k, ks)
    stats = ("diagonal_ratio", "total", "spearman_diag_concentration", "spearman_diag_concentration_clipped")
    cover = {f"{s}.{t}": [0, 0] for s in stats for t in STEPS}
    cover.update({f"ratio.k{kk}.{t}": [0, 0] for kk in ks for t in STEPS})
    cover.update({f"{s}.{a}-{b}": [0, 0] for s in cm.DIFFERENCE_STATS for a, b in (("1", "6"), ("1", "11"), ("6", "11"))})
    contained, total_cis, withheld = 0, 0, {}
    holds = {"R1": 0, "R2": 0, "R3": 0}
    rng = np.random.default_rng(seed + 1)

    def score(key, value, ci, truth_value):
        nonlocal contained, total_cis
        if ci is None:
            withheld[key] = withheld.get(key, 0) + 1
            return
        total_cis += 1
        contained += ci[0] <= value <= ci[1]
        slack = 1e-12 * max(1.0, abs(truth_value))  # a truth of 1 computed as 1 + 2e-16 is 1
        cover[key][0] += ci[0] - slack <= truth_value <= ci[1] + slack
        cover[key][1] += 1

    t0 = time.perf_counter()
    for r in range(replicates):
        speech, text, langs, sids = sample(pop, n, rng)
        a = cm.compare_steps(speech, text, langs, sids, k=k, ks=ks, n_boot=n_boot, seed=seed + 100 + r)
        for t in STEPS:
            e = a["overlap"][t]
            for s in stats:
                score(f"{s}.{t}", e[s], e[f"{s}_ci"], true[t][s])
            for i, kk in enumerate(ks):
                score(f"ratio.k{kk}.{t}", a["k_sweep"]["diagonal_ratio"][t][i],
                      a["k_sweep"]["diagonal_ratio_ci"][t][i], true[t]["sweep"][i])
        for s, pairs in a["step_differences"].items():
            for pair, d in pairs.items():
                x, y = pair.split("-")
                score(f"{s}.{pair}", d["estimate"], d["ci"], true[x][s] - true[y][s])
        for c, ok in _verdicts(a).items():
            holds[c] += ok
        if verbose and (r + 1) % max(1, replicates // 10) == 0:
            print(f"  {r + 1}/{replicates} replicates, {time.perf_counter() - t0:.0f} s", flush=True)
    coverage = {key: {"covered": h, "intervals": m, "rate": (h / m if m else None),
                      "lower_95": (_lower_bound(h, m) if m else None)} for key, (h, m) in cover.items()}
    return {"truth": {t: {s: true[t][s] for s in (*stats, "sweep_mean")} for t in STEPS},
            "coverage": coverage, "withheld": withheld,
            "containment": contained / total_cis if total_cis else None,
            "holds": {c: v / replicates for c, v in holds.items()}, "replicates": replicates}


#: The intervals the ordering claims judge on (R1, R3, R6): differences from t=1.
JUDGED = tuple(f"{s}.1-{t}" for s in ("diagonal_ratio", "total", "sweep_mean") for t in ("6", "11"))


def main(args) -> int:
    ks = [int(v) for v in args.k_sweep.split(",") if v.strip()]
    common = dict(n=args.sentences, n_neurons=args.neurons, k=args.k, ks=ks, n_boot=args.n_boot, seed=args.seed)
    print(f"planted populations: 5 languages x {args.neurons} neurons, k={args.k} (k/N = "
          f"{args.k / args.neurons:.4f}), {args.sentences} sentences per language, {args.n_boot} half-samples, "
          f"{args.replicates} + {args.null_replicates} replicates", flush=True)
    power = study(PAPER_LIKE, replicates=args.replicates, **common)
    size = study(NULL, replicates=args.null_replicates, **common)
    rates = {key: v for key, v in power["coverage"].items() if v["rate"] is not None}
    for key, v in sorted(rates.items()):
        print(f"coverage {key:<40} {v['rate']:.3f}  (one-sided 95% lower bound {v['lower_95']:.3f}, "
              f"{v['intervals']} intervals){'  judged by R1/R3/R6' if key in JUDGED else ''}")
    for key, n in sorted(power["withheld"].items()):
        print(f"withheld {key:<40} {n} of {power['replicates']} replicates")
    judged = min((rates[k]["rate"], k) for k in JUDGED if k in rates)
    worst = min((v["rate"], k) for k, v in rates.items())
    print(f"containment: {power['containment']:.3f} (null {size['containment']:.3f}); lowest coverage of an "
          f"interval a claim judges on {judged[0]:.3f} ({judged[1]}); lowest of all {worst[0]:.3f} ({worst[1]})")
    print("power (paper-like population, share of replicates where the claim holds): "
          + ", ".join(f"{c} {v:.3f}" for c, v in power["holds"].items()))
    print("size (null population, share where it holds): " + ", ".join(f"{c} {v:.3f}" for c, v in size["holds"].items()))
    print(json.dumps({"benchmark": "coverage", "sentences": args.sentences, "neurons": args.neurons, "k": args.k,
                      "k_sweep": ks, "n_boot": args.n_boot, "replicates": args.replicates,
                      "null_replicates": args.null_replicates, "truth": power["truth"],
                      "lowest_judged_coverage": judged[0], "lowest_judged_stat": judged[1],
                      "lowest_coverage": worst[0], "lowest_coverage_stat": worst[1],
                      "coverage": {k: v["rate"] for k, v in power["coverage"].items()},
                      "coverage_lower_95": {k: v["lower_95"] for k, v in power["coverage"].items()},
                      "withheld": power["withheld"], "containment": power["containment"],
                      "null_containment": size["containment"], "power": power["holds"], "null_holds": size["holds"]}))
    return 0
