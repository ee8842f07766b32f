"""Numbers as the report's first screen shows them: one line per claim, the paper's headline
number beside ours (each claim's ``headline`` in ``engine.outputs.claims`` builds its line from
these).

Fractions of neurons as percent with one decimal ("56.6%"), control rates and fastText
probabilities (already percent) the same way, effect ratios with two decimals, p values as
"p = 0.008". Every value that is absent, None or NaN reads "n/a"; an interval is shown only
where one exists (""). The report's tables use the same functions.
"""
from __future__ import annotations

import math
from typing import Mapping

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


def frac(x) -> str:
    """A fraction as percent with one decimal ("56.6%"); None/NaN -> "n/a"."""
    return percent(x, fraction=True)


def at(measured: Mapping, key: str):
    """``measured[key]``, None when it or the key is absent."""
    return measured.get(key) if measured else None


def steps_line(measured, stem: str, fmt, steps=("1", "6", "11")) -> str:
    """"v1 at t=1 (vs v6, v11)": the headline step first, the others for the ordering."""
    head, rest = steps[0], steps[1:]
    others = ", ".join(fmt(at(measured, f"{stem}.{t}")) for t in rest)
    return f"{fmt(at(measured, f'{stem}.{head}'))} at t={head} (vs {others})"


def extreme(measured: Mapping, prefix: str, suffix: str, pick) -> tuple[float | None, str | None]:
    """``pick`` (min or max) over the finite values whose key is ``prefix…suffix``: ``(value, the key
    between prefix and suffix)``, ``(None, None)`` when there is none."""
    vals = [(v, k) for k, v in (measured or {}).items()
            if k.startswith(prefix) and k.endswith(suffix) and finite(v) is not None]
    if not vals:
        return None, None
    v, k = pick(vals)
    return v, k[len(prefix):-len(suffix) or None]


def arrow(vals, fmt) -> str:
    """Values in ``fmt`` joined by arrows, in step order ("1.0%→2.0%")."""
    return "→".join(fmt(v) for v in vals)
