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

Each claim lives in one place (``representation`` for R1-R9, ``steering`` for S1-S6 and the
tables): its measure, its check, its headline and its figure, as one
:class:`~engine.outputs.claims.base.Claim`. Adding a claim is its registry entry
(``fixtures/claims_registry.json``), its ``Claim`` in one of those modules, and its test in
``claims/``.
"""
from __future__ import annotations

from typing import Any, Mapping

from engine.outputs.claims import representation, steering
from engine.outputs.claims.base import (
    PAPER_MODEL_TYPES,
    REGISTRY_PATH,
    Claim,
    Judge,
    Verdict,
    information_only,
    load_registry,
)
from engine.outputs.glance import NA

__all__ = ["CLAIMS", "CLAIM_IDS", "PAPER_MODEL_TYPES", "REGISTRY_PATH", "Claim", "Verdict", "baseline_parts", "check",
           "headline", "information_only", "load_registry", "measurements"]

#: Every claim, in the paper's order of reading: id -> Claim.
CLAIMS: dict[str, Claim] = {c.id: c for c in (*representation.CLAIMS, *steering.CLAIMS)}
CLAIM_IDS = tuple(CLAIMS)


def _claim(claim_id: str) -> Claim:
    if claim_id not in CLAIMS:
        raise ValueError(f"unknown claim id {claim_id!r}; known: {', '.join(CLAIM_IDS)}")
    return CLAIMS[claim_id]


def measurements(claim_id: str, analysis: dict) -> dict[str, float]:
    """The numbers claim ``claim_id`` looks at, as a flat ``{name: float}`` (NaN for null).

    Used for tiny-profile regression baselines. Raises ``KeyError`` naming the missing
    artifact key when the analysis lacks what the claim needs, ``ValueError`` for an
    unknown claim id.
    """
    return _claim(claim_id).measure(analysis)


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
    claim = _claim(claim_id)
    judge = Judge()
    try:
        measured = claim.check(analysis, registry_entry, judge)
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


def headline(claim_id: str, measured: Mapping | None, ci: Mapping | None, paper: Mapping, tolerance: Any,
             analysis: Mapping | None = None, cells: tuple[int, int] | None = None) -> dict[str, str]:
    """The claim's line on the report's first screen: ``{"claim", "paper", "ours", "interval"}``.

    Numbers are in the unit the paper states them in (``engine.outputs.glance``): fractions of
    neurons as percent with one decimal ("56.6%"), control rates and fastText probabilities
    (already percent) the same way, effect ratios with two decimals, p values as "p = 0.008". A
    qualitative claim shows the paper's criterion and our matching value ("peak layers 4–10" /
    "peak layer 6"). ``measured`` / ``ci``: the claim's ``Verdict.measured`` and ``.ci`` (None
    when the claim could not be measured: then "ours" is "n/a" and there is no interval).
    ``paper`` / ``tolerance``: its registry entry's. ``analysis``: for the few headlines read
    from a section directly (the k sweep, the speech encoder's layers). ``cells``: (within
    tolerance, total) of the claim's table, for T1/T3/T4. ``interval`` is the interval of the
    headline number only, "" if none.
    """
    claim = _claim(claim_id)
    m, ci = measured or {}, ci or {}
    out = {"claim": claim.short, "paper": NA, "ours": NA if not m else "", "interval": ""}
    out.update(claim.headline(m, ci, paper or {}, tolerance, analysis or {}, cells))
    if not m:
        out["ours"], out["interval"] = NA, ""
    return out
