r"""Output quality beyond the script: content against a reference (BLEU, chrF++, their combined
score, WER, CER) and code-mixing over the model tokenizer's pieces (the control rate by pieces,
M-index, I-index), each with a 95% bootstrap interval over sentences.

The paper's authors scored outputs with two scripts of konta3738/generation-step-aware-framework:

- ``assets/translation_gold/exp2_eval.py``: sacrebleu ``BLEU(effective_order=True)`` and
  ``CHRF(char_order=6, word_order=2, beta=2, lowercase=False)`` (chrF++) as corpus scores, their
  combination ``0.6 * BLEU + 0.4 * chrF++``, and jiwer's corpus WER and CER after the ASR
  normalisation ``strip().lower()`` of both sides;
- ``utils/codemix_seamless_regex_metrics.py``: every output cut into the SeamlessM4T tokenizer's
  pieces, each piece (its "▁" marker dropped) put in one bucket, Latin, CJK, Mix or Other, by the
  Unicode Script property; the control rate ``Latin / (Latin + CJK)`` pooled over pieces
  (``p_tok_latin_given_pure_lc``), and per output the 2-way M-index of the pure pieces and the
  I-index of their sequence.

The same definitions here, on the same libraries, with these differences (each a decision):

- **BLEU's tokenizer follows the target language** (``bleu_tokenizer``): "13a" (the authors'
  everywhere, sacrebleu's default) for space-delimited scripts, "zh" for Chinese (cmn, yue),
  "char" for Japanese and for Thai, Lao, Khmer and Burmese. With "13a" an unsegmented Chinese
  or Japanese sentence is one or a few "words", so its BLEU measures little beyond exact match;
  sacrebleu recommends "ja-mecab" for Japanese, which needs MeCab and is not installable
  offline, so Japanese is split into characters. ``tokenize="13a"`` reproduces the authors.
  chrF++ needs no tokenizer and is the authors' everywhere (its word bigrams, split at spaces,
  carry little on unsegmented text, as theirs).
- **Pieces against any two script classes** of ``engine.science.scripts.SCRIPT_CLASSES``:
  ``classify_piece`` generalises the authors' buckets to a pair ``(a, b)``; for
  ``("latin", "cjk")`` it is their function (``tests/test_evaluation.py`` checks it against a
  re-statement of theirs). Rates are in percent (theirs are fractions), and a corpus with no
  pure piece has no rate (``None``; their per-output rate says 0).
- **Intervals** (theirs had none): 95% percentile bootstrap over sentences. ``n_boot``
  resamples of the sentences with replacement, drawn by ``numpy.random.default_rng(seed)``;
  every resample's statistic is the corpus statistic of that resampled corpus (sums of
  per-sentence counts: sacrebleu's sufficient statistics, jiwer's edit counts, piece counts),
  and the interval is the 2.5th and 97.5th percentiles (``numpy.percentile``, linear) of those.
  The same ``seed`` and the same number of sentences give the same resamples to every metric,
  so intervals of two metrics on one corpus are paired (the combined score's interval is taken
  from the resampled BLEU and chrF++ of the same resamples). ``n_boot=0`` gives ``ci=None``;
  resamples where the statistic is undefined (no reference word, no pure piece) are left out,
  and when they are more than ``1 - intervals.MIN_DEFINED`` (10%) of all, ``ci`` is ``None``.
  sacrebleu's own ``corpus_score(..., n_bootstrap=N)`` is not used: its generator is seeded
  from the ``SACREBLEU_SEED`` environment variable (default 12345), not by an argument, it sums
  statistics in float32 and it reports the resamples' mean with a symmetric half-width rather
  than an interval around the corpus score.

sacrebleu exposes per-sentence sufficient statistics only through ``Metric._extract_corpus_statistics``
and ``Metric._compute_score_from_stats`` (what its own significance tests use); the tests check
the point values against its public ``corpus_score`` so that a change in them is caught.

Every function takes plain sequences of ``str`` (and, for pieces, a callable), returns a dict
of plain ``int``/``float``/``str``/``list``/``None`` (JSON as is), has no side effects, and
raises ``engine.errors.UserError`` with one line for bad input: an empty corpus, a
hypothesis/reference count mismatch (naming both counts), a non-string item, a bad ``n_boot``
or ``seed``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import jiwer
import numpy as np
import regex
from sacrebleu.metrics import BLEU, CHRF

from engine.errors import UserError
from engine.science.intervals import MIN_DEFINED, QUANTILES
from engine.science.languages import get_language
from engine.science.scripts import CJK, LATIN, SCRIPT_CLASSES, classify_tokens, pair_scripts

__all__ = ["SP_SPACE", "MIX", "OTHER", "BLEU_WEIGHT", "CHRF_WEIGHT", "bleu_tokenizer", "bleu", "chrf_pp",
           "translation_scores", "wer", "cer", "classify_piece", "piece_control_rate", "m_index",
           "i_index", "code_mixing"]

#: SentencePiece's word-start marker, dropped from a piece before it is classified.
SP_SPACE = "▁"
#: The authors' combined score: ``BLEU_WEIGHT * BLEU + CHRF_WEIGHT * chrF++``.
BLEU_WEIGHT = 0.6
CHRF_WEIGHT = 0.4
#: Elements of one block of bootstrap counts (resamples x sentences), bounding memory.
_BLOCK_ELEMENTS = 2**22


# ------------------------------------------------------------------------------------------------
# validation and the bootstrap shared by every metric


def _texts(values, name: str) -> list[str]:
    """``values`` as a non-empty list of str, or UserError naming ``name``."""
    if isinstance(values, (str, bytes)):
        raise UserError(f"{name} must be a list of strings (one per sentence), got a single {type(values).__name__}")
    try:
        out = list(values)
    except TypeError:
        raise UserError(f"{name} must be a list of strings, got {type(values).__name__}") from None
    if not out:
        raise UserError(f"{name} is empty: need at least one sentence")
    for i, v in enumerate(out):
        if not isinstance(v, str):
            raise UserError(f"{name}[{i}] is {type(v).__name__}, not str")
    return out


def _paired(hypotheses, references) -> tuple[list[str], list[str]]:
    hyps, refs = _texts(hypotheses, "hypotheses"), _texts(references, "references")
    if len(hyps) != len(refs):
        raise UserError(f"{len(hyps)} hypotheses but {len(refs)} references: give one reference per hypothesis")
    return hyps, refs


def _check_boot(n_boot, seed) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise UserError(f"n_boot must be an integer >= 0 (0: no interval), got {n_boot!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed must be an integer >= 0, got {seed!r}")


def _resampled_sums(stats: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """``float64 [n_boot, k]``: column sums of ``stats`` ``[n, k]`` over ``n_boot`` bootstrap
    resamples of its rows (``n`` rows drawn with replacement, ``default_rng(seed)``)."""
    n = stats.shape[0]
    rng = np.random.default_rng(seed)
    x = stats.astype(np.float64)  # counts below 2**53 are exact
    out = np.empty((n_boot, x.shape[1]), dtype=np.float64)
    block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        rows = rng.integers(0, n, size=(b, n))
        counts = np.bincount((rows + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        out[start:start + b] = counts @ x
    return out


def _ci(replicates) -> list[float] | None:
    """95% percentile interval of the finite ``replicates``; None when fewer than MIN_DEFINED of
    them are finite (the statistic is undefined on too many resamples)."""
    r = np.asarray(replicates, dtype=np.float64)
    finite = r[np.isfinite(r)]
    if r.size == 0 or finite.size < MIN_DEFINED * r.size:
        return None
    lo, hi = np.percentile(finite, QUANTILES)
    return [float(lo), float(hi)]


# ------------------------------------------------------------------------------------------------
# BLEU, chrF++ and the combined score (sacrebleu)


def bleu_tokenizer(target_lang: str | None = None) -> str:
    """sacrebleu tokenizer BLEU uses for outputs in ``target_lang`` (a SeamlessM4T code).

    "13a" for ``None`` (the authors' choice for every language) and for space-delimited scripts;
    "zh" for Chinese (a ``cjk``-script language other than Japanese: cmn, yue), which splits Han
    characters and tokenizes the rest as 13a; "char" for Japanese (jpn) and for the languages of
    a character-unit script class (Thai, Lao, Khmer, Burmese: no spaces between words), which
    splits every character. UserError for a code not in ``engine.science.languages``.
    """
    if target_lang is None:
        return "13a"
    lang = get_language(target_lang)
    if lang.code == "jpn":
        return "char"
    if lang.script == CJK:
        return "zh"
    return "char" if SCRIPT_CLASSES[lang.script].unit == "char" else "13a"


def _bleu_metric(target_lang: str | None, tokenize: str | None) -> BLEU:
    if tokenize is None:
        tokenize = bleu_tokenizer(target_lang)
    elif tokenize not in BLEU.TOKENIZERS:
        raise UserError(f"unknown BLEU tokenizer {tokenize!r}: use one of {', '.join(BLEU.TOKENIZERS)}")
    return BLEU(effective_order=True, tokenize=tokenize)


def _chrf_metric() -> CHRF:
    return CHRF(char_order=6, word_order=2, beta=2, lowercase=False)


def _sentence_stats(metric, hyps: list[str], refs: list[str]) -> tuple[list[int], np.ndarray]:
    """sacrebleu's per-sentence sufficient statistics: their integer column sums (the corpus)
    and the ``[n, k]`` matrix (for resampling)."""
    rows = metric._extract_corpus_statistics(hyps, [refs])
    return [sum(col) for col in zip(*rows)], np.asarray(rows, dtype=np.float64)


def _corpus_scores(metrics: dict, hyps: list[str], refs: list[str], n_boot: int, seed: int):
    """Corpus score of each metric, and its ``[n_boot]`` resampled scores (the same resamples for
    every metric; empty arrays with ``n_boot=0``)."""
    values, columns, mats = {}, {}, []
    for name, metric in metrics.items():
        total, mat = _sentence_stats(metric, hyps, refs)
        values[name] = float(metric._compute_score_from_stats(total).score)
        start = sum(m.shape[1] for m in mats)
        columns[name] = slice(start, start + mat.shape[1])
        mats.append(mat)
    boot = {name: np.empty(0) for name in metrics}
    if n_boot:
        resampled = _resampled_sums(np.hstack(mats), n_boot, seed)
        for name, metric in metrics.items():
            boot[name] = np.array([metric._compute_score_from_stats(row.tolist()).score
                                   for row in resampled[:, columns[name]]])
    return values, boot


def translation_scores(hypotheses: Sequence[str], references: Sequence[str], *, target_lang: str | None = None,
                       tokenize: str | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Corpus BLEU, chrF++ and the authors' combined score ``0.6 * BLEU + 0.4 * chrF++``.

    ``hypotheses``: the outputs, one str per sentence; ``references``: one reference str per
    hypothesis (same order). ``target_lang``: the outputs' language (SeamlessM4T code), which
    picks BLEU's tokenizer (``bleu_tokenizer``); ``tokenize``: a sacrebleu tokenizer name that
    overrides it ("13a" reproduces the authors on every language). BLEU is sacrebleu's
    ``BLEU(effective_order=True)`` (exponential smoothing; n-gram orders with no hypothesis
    n-gram are left out), chrF++ ``CHRF(char_order=6, word_order=2, beta=2, lowercase=False)``.
    All three in points, 0-100. Empty hypotheses are kept (they score 0).

    Returns ``{"bleu": {"value", "ci", "tokenize", "signature"}, "chrf_pp": {"value", "ci",
    "signature"}, "combined": {"value", "ci"}, "n"}``: ``ci`` ``[lo, hi]`` (95% bootstrap over
    sentences, the three from the same resamples) or None with ``n_boot=0``; ``signature``
    sacrebleu's reproducibility string; ``n`` the number of sentences.
    """
    hyps, refs = _paired(hypotheses, references)
    _check_boot(n_boot, seed)
    metrics = {"bleu": _bleu_metric(target_lang, tokenize), "chrf_pp": _chrf_metric()}
    values, boot = _corpus_scores(metrics, hyps, refs, n_boot, seed)
    out = {name: {"value": values[name], "ci": _ci(boot[name]),
                  "signature": metrics[name].get_signature().format()} for name in metrics}
    out["bleu"]["tokenize"] = metrics["bleu"].tokenizer.signature()
    out["combined"] = {
        "value": BLEU_WEIGHT * values["bleu"] + CHRF_WEIGHT * values["chrf_pp"],
        "ci": _ci(BLEU_WEIGHT * boot["bleu"] + CHRF_WEIGHT * boot["chrf_pp"])}
    out["n"] = len(hyps)
    return out


def bleu(hypotheses: Sequence[str], references: Sequence[str], *, target_lang: str | None = None,
         tokenize: str | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Corpus BLEU (points, 0-100) of ``hypotheses`` against one reference each, with its interval.

    sacrebleu ``BLEU(effective_order=True)`` as the authors, with the tokenizer of
    ``bleu_tokenizer(target_lang)`` unless ``tokenize`` names one (see ``translation_scores``).
    Returns ``{"value", "ci", "n", "tokenize", "signature"}``; ``ci`` is ``[lo, hi]`` (95%
    percentile bootstrap over sentences) or None with ``n_boot=0``.
    """
    hyps, refs = _paired(hypotheses, references)
    _check_boot(n_boot, seed)
    metric = _bleu_metric(target_lang, tokenize)
    values, boot = _corpus_scores({"bleu": metric}, hyps, refs, n_boot, seed)
    return {"value": values["bleu"], "ci": _ci(boot["bleu"]), "n": len(hyps),
            "tokenize": metric.tokenizer.signature(), "signature": metric.get_signature().format()}


def chrf_pp(hypotheses: Sequence[str], references: Sequence[str], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Corpus chrF++ (points, 0-100): sacrebleu ``CHRF(char_order=6, word_order=2, beta=2,
    lowercase=False)``, exactly the authors' (character 1-6-grams without spaces and word
    1-2-grams, recall weighted by beta = 2, case kept).

    Returns ``{"value", "ci", "n", "signature"}``; ``ci`` is ``[lo, hi]`` (95% percentile
    bootstrap over sentences) or None with ``n_boot=0``.
    """
    hyps, refs = _paired(hypotheses, references)
    _check_boot(n_boot, seed)
    metric = _chrf_metric()
    values, boot = _corpus_scores({"chrf_pp": metric}, hyps, refs, n_boot, seed)
    return {"value": values["chrf_pp"], "ci": _ci(boot["chrf_pp"]), "n": len(hyps),
            "signature": metric.get_signature().format()}


# ------------------------------------------------------------------------------------------------
# WER and CER (jiwer)


def _asr_normalise(texts: list[str]) -> list[str]:
    return [t.strip().lower() for t in texts]  # the authors' normalize_asr


def _edit_counts(output) -> np.ndarray:
    """``[n, 2]`` (edits, reference units) per sentence from one jiwer WordOutput/CharacterOutput:
    substitutions + deletions + insertions, and hits + substitutions + deletions."""
    rows = []
    for ref_units, chunks in zip(output.references, output.alignments):
        edits = 0
        for c in chunks:
            if c.type in ("substitute", "delete"):
                edits += c.ref_end_idx - c.ref_start_idx
            elif c.type == "insert":
                edits += c.hyp_end_idx - c.hyp_start_idx
        rows.append((edits, len(ref_units)))
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def _error_rate(counts: np.ndarray, unit: str, n_boot: int, seed: int) -> dict:
    errors, units = (int(v) for v in counts.sum(0))
    if units == 0:
        raise UserError(f"every reference is empty after strip(): the error rate has no reference {unit} to divide by")
    ci = None
    if n_boot:
        sums = _resampled_sums(counts, n_boot, seed)
        with np.errstate(divide="ignore", invalid="ignore"):
            ci = _ci(np.where(sums[:, 1] > 0, sums[:, 0] / sums[:, 1], np.nan))
    return {"value": errors / units, "ci": ci, "n": int(counts.shape[0]), "errors": errors, f"reference_{unit}": units}


def wer(references: Sequence[str], hypotheses: Sequence[str], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Corpus word error rate of ``hypotheses`` against ``references`` (jiwer's argument order:
    references first), after the authors' ASR normalisation ``strip().lower()`` of both.

    Words are jiwer's (``process_words`` default: runs of spaces collapsed, split at spaces, so
    punctuation stays on its word). The rate is a fraction, not a percentage: total
    substitutions + deletions + insertions over total reference words (0.25 = one error per four
    reference words; it exceeds 1 when the hypotheses insert many words). A sentence with an
    empty reference adds its hypothesis words as insertions and no reference word; every
    reference empty is a UserError.

    Returns ``{"value", "ci", "n", "errors", "reference_words"}``; ``ci`` is ``[lo, hi]`` (95%
    percentile bootstrap over sentences: errors and reference words re-summed per resample) or
    None with ``n_boot=0``.
    """
    refs, hyps = _paired_asr(references, hypotheses)
    _check_boot(n_boot, seed)
    return _error_rate(_edit_counts(jiwer.process_words(refs, hyps)), "words", n_boot, seed)


def cer(references: Sequence[str], hypotheses: Sequence[str], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Corpus character error rate, as ``wer`` over characters (jiwer ``process_characters``
    default: spaces inside a sentence are characters too, as in the authors' ``jiwer.cer``).

    A fraction: total character edits over total reference characters. Returns ``{"value",
    "ci", "n", "errors", "reference_chars"}``.
    """
    refs, hyps = _paired_asr(references, hypotheses)
    _check_boot(n_boot, seed)
    return _error_rate(_edit_counts(jiwer.process_characters(refs, hyps)), "chars", n_boot, seed)


def _paired_asr(references, hypotheses) -> tuple[list[str], list[str]]:
    hyps, refs = _paired(hypotheses, references)
    return _asr_normalise(refs), _asr_normalise(hyps)


# ------------------------------------------------------------------------------------------------
# pieces: the control rate and the code-mixing indices as the authors count them

_CHARS = ("script", "class")
#: The buckets of a piece that is of neither script alone: both (``MIX``) or neither (``OTHER``).
MIX, OTHER = "mix", "other"


@lru_cache(maxsize=64)
def _script_pattern(name: str) -> "regex.Pattern":
    """Any character whose Unicode Script property is one of class ``name``'s scripts (the
    authors' ``\\p{Script=...}`` tests, e.g. Han, Hiragana or Katakana for ``cjk``)."""
    return regex.compile("|".join(f"\\p{{Script={s}}}" for s in SCRIPT_CLASSES[name].scripts))


def _pair(scripts) -> tuple[str, str]:
    try:
        first, second = scripts
    except (TypeError, ValueError):
        raise UserError(f"scripts must be two script classes or language codes, got {scripts!r}") from None
    a, b = pair_scripts(first, second)
    if a == b:
        raise UserError(f"both scripts are '{a}': pieces cannot tell them apart; give two different script classes")
    return a, b


def _check_chars(chars: str) -> None:
    if chars not in _CHARS:
        raise UserError(f"chars must be 'script' (the authors' Script property) or 'class' "
                        f"(engine.science.scripts' classes), got {chars!r}")


def _classify(piece: str, a: str, b: str, chars: str) -> str:
    text = piece.replace(SP_SPACE, "")
    if not text or (text.startswith("<") and text.endswith(">")):
        return OTHER  # empty after the marker, or a special token (<unk>, <0xE3>, </s>, ...)
    if chars == "script":
        has_a = _script_pattern(a).search(text) is not None
        has_b = _script_pattern(b).search(text) is not None
    else:
        found = set(classify_tokens(text, (a, b), cjk="run"))
        has_a, has_b = a in found, b in found
    if has_a and has_b:
        return MIX
    return a if has_a else (b if has_b else OTHER)


def classify_piece(piece: str, scripts: tuple[str, str] = (LATIN, CJK), *, chars: str = "script") -> str:
    """Bucket of one tokenizer piece against two script classes ``scripts = (a, b)``.

    ``scripts``: two different classes of ``engine.science.scripts.SCRIPT_CLASSES`` or language
    codes (``("eng", "jpn")`` is ``("latin", "cjk")``). The "▁" marker is dropped first; then an
    empty piece, or one that starts with "<" and ends with ">" (``<unk>``, byte pieces like
    ``<0xE3>``), is ``"other"``; otherwise the piece is ``a`` when it has a character of ``a``
    and none of ``b``, ``b`` likewise, ``"mix"`` when it has both and ``"other"`` when neither
    (digits, punctuation, spaces, emoji, a third script). A third script does not make a piece
    mixed: against ``("latin", "cjk")`` a piece of Latin and Cyrillic letters is ``"latin"``, as
    the authors count (SentencePiece splits pieces at script changes by default, so such pieces
    are rare).

    ``chars="script"`` (default): a character is of a class when its Unicode Script property is
    one of the class's scripts (``\\p{Script=Latin}``; Han, Hiragana or Katakana for ``cjk``),
    exactly the authors' ``token_bucket_latin_cjk_mix_other`` for ("latin", "cjk"), which
    returns "Latin", "CJK", "Mix", "Other" where this returns "latin", "cjk", "mix", "other".
    ``chars="class"``: the characters of ``engine.science.scripts`` (the project's control
    rate), which also count the Common letters of a class (the long-vowel mark ー, ゛ ゜, the
    kana middle dot ・) and leave out its symbols (Kangxi radicals, circled katakana).
    """
    if not isinstance(piece, str):
        raise UserError(f"a piece must be a str, got {type(piece).__name__}")
    _check_chars(chars)
    a, b = _pair(scripts)
    return _classify(piece, a, b, chars)


def _piece_labels(outputs, pieces, a: str, b: str, chars: str) -> list[list[str]]:
    """Bucket of every piece of every output, in order."""
    texts = _texts(outputs, "outputs")
    if not callable(pieces):
        raise UserError(f"pieces must be a callable text -> list of pieces (str), got {type(pieces).__name__}")
    _check_chars(chars)
    labels = []
    for i, text in enumerate(texts):
        got = pieces(text)
        if isinstance(got, str) or not isinstance(got, (list, tuple)) or not all(isinstance(p, str) for p in got):
            raise UserError(f"pieces(outputs[{i}]) returned {type(got).__name__}; it must return a list of str")
        labels.append([_classify(p, a, b, chars) for p in got])
    return labels


def piece_control_rate(outputs: Sequence[str], pieces: Callable[[str], list[str]], target: str, *,
                       source: str | None = None, chars: str = "script", n_boot: int = 1000, seed: int = 0) -> dict:
    """Control rate by pieces, in percent: pieces of ``target``'s script over pieces of
    ``target``'s or ``source``'s script, pooled over all ``outputs`` (token-weighted: a long
    output weighs more), mixed and other pieces left out (``classify_piece``).

    ``outputs``: the generated texts; ``pieces(text)``: the model tokenizer's pieces of a text,
    e.g. for a Hugging Face tokenizer ``lambda s: tok.convert_ids_to_tokens(tok.encode(s,
    add_special_tokens=False))`` as the authors; ``target``/``source``: script classes or
    language codes, source by default the paper's other class (Latin for a CJK target, CJK for a
    Latin target; any other target needs ``source``). With target "latin" and source "cjk" the
    value is exactly 100 times the authors' corpus ``p_tok_latin_given_pure_lc``.

    Returns ``{"value", "ci", "n", "target", "source", "chars", "pieces": {target, source,
    "mix", "other"}}``: ``value`` None when no output has a pure piece of either script;
    ``ci`` ``[lo, hi]`` (95% percentile bootstrap over outputs) or None; ``n`` the number of
    outputs; ``pieces`` the piece counts of each bucket.
    """
    tgt = pair_scripts(target, target)[0]  # validates: a script class or a language code
    if source is None:
        if tgt not in (LATIN, CJK):
            raise UserError(f"piece_control_rate toward '{tgt}' needs source= (the language or script "
                            "the output is steered away from)")
        source = CJK if tgt == LATIN else LATIN
    src, tgt = _pair((source, tgt))
    _check_boot(n_boot, seed)
    labels = _piece_labels(outputs, pieces, src, tgt, chars)
    counts = np.array([[seq.count(tgt), seq.count(src)] for seq in labels], dtype=np.int64).reshape(-1, 2)
    t, s = (int(v) for v in counts.sum(0))
    ci = None
    if n_boot:
        sums = _resampled_sums(counts, n_boot, seed)
        pure = sums.sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ci = _ci(np.where(pure > 0, 100.0 * (sums[:, 0] / pure), np.nan))
    n_mix = sum(seq.count(MIX) for seq in labels)
    n_other = sum(seq.count(OTHER) for seq in labels)
    return {"value": 100.0 * (t / (t + s)) if t + s else None, "ci": ci, "n": len(labels),
            "target": tgt, "source": src, "chars": chars,
            "pieces": {tgt: t, src: s, MIX: n_mix, OTHER: n_other}}


def m_index(counts: Sequence[float]) -> float:
    """M-index of a distribution over ``n`` labels given by their counts, as the authors define
    it: ``(1 - Σ p_i²) / (n - 1)`` with ``p_i = counts_i / Σ counts``.

    It ranges from 0 (one label only) to ``1 / n`` (an even split: 0.5 for two scripts). This is
    not Barnett et al.'s (2000) M-index ``(1 - Σ p_i²) / ((n - 1) Σ p_i²)``, which reaches 1 on
    an even split; the two order distributions alike (both fall as ``Σ p_i²`` grows) but differ
    in scale. 0 when ``n < 2`` or every count is 0, as the authors' ``m_index_from_distribution``
    (which takes the proportions; the same arithmetic). UserError for a negative or non-finite
    count.
    """
    c = [float(x) for x in counts]
    if any(not math.isfinite(x) or x < 0 for x in c):
        raise UserError(f"m_index needs non-negative finite counts, got {list(counts)!r}")
    total = sum(c)
    if len(c) < 2 or total == 0:
        return 0.0
    p = [x / total for x in c]
    return (1.0 - sum(pi * pi for pi in p)) / (len(p) - 1)


def i_index(labels: Sequence) -> float:
    """I-index (integration index) of a sequence of labels: the number of neighbours that differ
    (switches) over ``N - 1``; 0 (no switch) to 1 (a switch at every step), 0 for ``N < 2``
    (the authors' ``i_index_from_sequence``)."""
    seq = list(labels)
    if len(seq) < 2:
        return 0.0
    return sum(1 for x, y in zip(seq, seq[1:]) if x != y) / (len(seq) - 1)


def code_mixing(outputs: Sequence[str], pieces: Callable[[str], list[str]], scripts: tuple[str, str] = (LATIN, CJK),
                *, chars: str = "script", n_boot: int = 1000, seed: int = 0) -> dict:
    """The authors' code-mixing indices over pieces, per output and then averaged over outputs.

    For each output, its pure pieces of the two ``scripts`` (``classify_piece``; mixed and other
    pieces dropped) give the 2-way M-index of their counts (0 when it has none; the authors'
    ``M_index_2way_pure_LatinCJK``) and the I-index of their sequence (0 with fewer than two;
    ``I_index_2label_pure_LatinCJK``). Each index is the mean over outputs (every output weighs
    the same, an output without pure pieces counts 0) with a 95% percentile bootstrap interval
    over outputs. ``pieces``, ``scripts`` and ``chars`` as in ``piece_control_rate`` /
    ``classify_piece``.

    Returns ``{"m_index": {"value", "ci"}, "i_index": {"value", "ci"}, "n", "scripts", "chars"}``.
    """
    a, b = _pair(scripts)
    _check_boot(n_boot, seed)
    labels = _piece_labels(outputs, pieces, a, b, chars)
    per_output = []
    for seq in labels:
        pure = [x for x in seq if x in (a, b)]
        per_output.append((m_index([pure.count(a), pure.count(b)]), i_index(pure)))
    values = np.array(per_output, dtype=np.float64).reshape(-1, 2)
    n = values.shape[0]
    boot = _resampled_sums(values, n_boot, seed) / n if n_boot else None
    out = {}
    for j, name in enumerate(("m_index", "i_index")):
        out[name] = {"value": float(values[:, j].mean()), "ci": _ci(boot[:, j]) if n_boot else None}
    return {**out, "n": n, "scripts": [a, b], "chars": chars}
