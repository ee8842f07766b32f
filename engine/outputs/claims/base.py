"""What every claim is made of: its verdict, the registry, the judge that collects its
conditions, and the accessors of the analysis artifact its measures read.

A claim (:class:`Claim`) holds in one place what the suite needs of it: ``measure`` (the numbers
it looks at, compared with regression baselines), ``check`` (the paper's bounds, through a
:class:`Judge`), ``headline`` (its line on the report's first screen) and ``figure`` (the
``engine.outputs.plots`` figure that shows its evidence). The claims themselves are in
``representation`` (R1-R9) and ``steering`` (S1-S6, T1, T3, T4).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.files import REPO_ROOT

REGISTRY_PATH = REPO_ROOT / "fixtures" / "claims_registry.json"


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


@dataclass(frozen=True)
class Claim:
    """One claim of the paper as the suite judges and shows it.

    ``measure(analysis) -> {name: float}``: the numbers it looks at (KeyError naming what the
    artifact lacks). ``check(analysis, registry_entry, judge) -> measured``: states its
    conditions on ``judge`` and returns what it measured. ``headline(measured, ci, paper,
    tolerance, analysis, cells) -> {"paper", "ours", "interval"}``: its line on the report's
    first screen (``cells``: (within tolerance, total) of its figure's table, for the table
    claims). ``short``: the claim in a few words. ``figure``: the report figure with its evidence.
    """

    id: str
    short: str
    figure: str
    measure: Callable[[dict], dict]
    check: Callable[[dict, dict, "Judge"], dict]
    headline: Callable[..., dict]


# ----------------------------------------------------------------------------- judging and reading the artifact

class Judge:
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


def num(x) -> float:
    return float("nan") if x is None else float(x)


def steps_of(analysis: dict) -> list[str]:
    return sorted(analysis["overlap"], key=int)


def ci_of(entry: dict, key: str) -> tuple[float, float]:
    """An interval of the artifact as floats; NaN bounds where it was withheld (None)."""
    ci = entry[key]
    if ci is None:
        return float("nan"), float("nan")
    return num(ci[0]), num(ci[1])


def difference(analysis: dict, stat: str, pair: str) -> tuple[float, float, float]:
    """``(estimate, lo, hi)`` of ``stat(a) - stat(b)`` for ``pair = "a-b"`` from the compare
    stage's ``step_differences`` (one set of half-samples for both steps); NaN where the
    artifact has none (an ordering judged on it then fails)."""
    d = analysis.get("step_differences", {}).get(stat, {}).get(pair)
    if d is None:
        return float("nan"), float("nan"), float("nan")
    lo, hi = ci_of(d, "ci")
    return num(d["estimate"]), lo, hi


def rows_of(analysis: dict, intervention: str = "median") -> list[dict]:
    return [r for r in analysis["steering"]["rows"] if r.get("intervention", "median") == intervention]


def find_row(analysis: dict, src: str, tgt: str, task: str, step, intervention: str = "median") -> dict | None:
    """The steering row of (src, tgt, task, step, intervention), or None. The unsteered
    baseline ("none") has step None."""
    for r in rows_of(analysis, intervention):
        if r["src"] != src or r["tgt"] != tgt or r["task"] != task:
            continue
        if (r["step"] is None and step is None) or (
                r["step"] is not None and step is not None and int(r["step"]) == int(step)):
            return r
    return None


def row_of(analysis: dict, src: str, tgt: str, task: str, step: int | str, intervention: str = "median") -> dict:
    r = find_row(analysis, src, tgt, task, step, intervention)
    if r is None:
        raise KeyError(f"steering row src={src} tgt={tgt} task={task} step={step} intervention={intervention}")
    return r


def row_ci(r: dict) -> tuple[float, float]:
    ci = r.get("control_rate_ci")
    if not ci:
        return float("nan"), float("nan")
    return num(ci[0]), num(ci[1])


def pairs_of(analysis: dict) -> list[tuple[str, str]]:
    seen = []
    for r in rows_of(analysis):
        key = (r["src"], r["tgt"])
        if key not in seen:
            seen.append(key)
    return seen


def steered_pairs(analysis: dict) -> set[tuple[str, str]]:
    """The (src, tgt) pairs the run steered: its steering config, else its rows."""
    cfg = (analysis.get("steering") or {}).get("config") or {}
    if cfg.get("pairs"):
        return {(a, b) for a, b in cfg["pairs"]}
    return set(pairs_of(analysis))
