"""The record stage: every catalog neuron of every identification example into the activation store.

Progress is kept per row block of the store, so a run killed at any moment resumes where it
stopped and writes the same bytes as an uninterrupted run. Under ``torchrun`` (``WORLD_SIZE``
> 1) every process records a disjoint shard of the row blocks into the same store.

Tasks of one ``RECORD_GROUPS`` group (S2T and ASR: the same utterances) are recorded together:
the speech encoder runs and is stored once per utterance, and each task's decoder runs on it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from engine.errors import UserError
from engine.files import atomic_write_json
from engine.model import lm_recorder, recorder
from engine.pipeline import launch
from engine.pipeline.definitions import recorded_activities
from engine.pipeline.run import (
    ENCODER_STACK,
    RECORD_GROUPS,
    RECORD_TASKS,
    TASK_MODALITY,
    Run,
    barrier,
    matrices,
    model_inputs,
    progress,
    task_examples,
)
from engine.pipeline.store import MatrixStore, resolve_store_dtype


def _check_aligned(examples: dict[str, list]) -> None:
    """Tasks sharing an encoder must list the same (sentence, language) in the same row order."""
    keys = {task: [(ex.sentence_id, ex.lang) for ex in exs] for task, exs in examples.items()}
    first, *others = keys
    for task in others:
        if keys[task] != keys[first]:
            raise RuntimeError(f"{task} and {first} examples are not aligned row by row; cannot share "
                               "their encoder matrix")


def _describer(cat, stack: str, where: str, example_ids: list[str]):
    """``describe(row, col)`` for a store's range error: the example and the model component."""
    def describe(row: int, col: int) -> str:
        ((comp, channel),) = cat.locate(stack, [col])
        return (f"record {where}, example {example_ids[row]}: {stack} layer {comp.layer} {comp.name} "
                f"channel {int(channel[0])} (column {col})")
    return describe


def stage_record(run: Run) -> None:
    r = run.cfg["record"]
    # a speech LLM (engine.model.speech_llm) records through its own recorder
    record_shared_encoder = (lm_recorder if getattr(run.model(), "decoder_only", False) else recorder).record_shared_encoder
    cat = run.catalog()
    defs = run.cfg["definitions"]
    # pooled means in float32, as the authors' code keeps them, or in the store's own type
    dtype = "float32" if defs["precision"] == "float32" else resolve_store_dtype(r["store_dtype"], run.model().dtype)
    steps = r["steps"]
    activities = recorded_activities(run.cfg)
    options = recorder.RecordOptions(activities=tuple(activities), keep_short=defs["short_outputs"] == "keep",
                                     text_length=defs["text_length"],
                                     default_source_tag=defs["text_source_tag"] == "default",
                                     pool_masked=defs["pool_masked"])
    long_frames = defs["long_speech_frames"]
    for group in RECORD_GROUPS:
        examples = {task: task_examples(run, task, "identify") for task in group}
        _check_aligned(examples)
        n_rows = len(examples[group[0]])
        stack = ENCODER_STACK[group[0]]
        encoder = MatrixStore.create(matrices(run, group[0])["encoder"], n_rows, cat.n_neurons(stack),
                                     rows_per_block=r["rows_per_block"], cols_per_chunk=r["cols_per_chunk"], dtype=dtype,
                                     attrs={"tasks": list(group), "matrix": "encoder"})
        decoders = {(task, t, a): MatrixStore.create(
                        matrices(run, task, a)[f"decoder_t{t}"], n_rows, cat.n_neurons("text_decoder"),
                        rows_per_block=r["rows_per_block"], cols_per_chunk=r["cols_per_chunk"], dtype=dtype,
                        attrs={"task": task, "matrix": matrices(run, task, a)[f"decoder_t{t}"].name})
                    for task in group for t in steps for a in activities}
        # rank 0 verifies the blocks (invalidating damage) and every rank records its share of
        # that one list: a damaged block is recorded again once, by one rank
        pending = launch.current().from_rank0(f"record/{'+'.join(group)}/pending", lambda: sorted(
            set(encoder.pending_blocks()).union(*(s.pending_blocks() for s in decoders.values()))))
        mine = [b for b in pending if b % run.world == run.rank]
        for block in progress(mine, desc=f"record {'+'.join(group)}", unit="block"):
            start, stop = encoder.block_rows(block)
            inputs = {group[0]: model_inputs(run, examples[group[0]][start:stop])}
            for task in group[1:]:  # the same utterances (aligned): audio loaded once, only the target differs
                inputs[task] = [dataclasses.replace(a, example_id=ex.example_id, tgt_lang=ex.tgt_lang,
                                                    reference=ex.reference)
                                for a, ex in zip(inputs[group[0]], examples[task][start:stop])]
            enc = []
            dec = {key: [] for key in decoders}
            info = {task: _block_info(steps, activities, long_frames) for task in group}
            for records in record_shared_encoder(run.model(), cat, [inputs[task] for task in group],
                                                 steps=tuple(steps), batch_size=run.cfg["model"]["batch_size"],
                                                 prefix=r["prefix"], max_new_tokens=r["max_new_tokens"],
                                                 options=options):
                enc.append(records[0].encoder)
                for task, br in zip(group, records):
                    for t in steps:
                        info[task]["valid"][str(t)].extend(bool(v) for v in br.valid[t])
                        for a in activities:
                            dec[task, t, a].append(br.decoder[t] if a == "position" else br.prefix_mean[t])
                        if "prefix_mean" in activities:
                            info[task]["valid_prefix_mean"][str(t)].extend(bool(v) for v in br.valid_prefix_mean[t])
                    if long_frames:
                        info[task]["frames"] += [int(f) for f in br.frames]
                    info[task]["example_ids"] += list(br.example_ids)
                    info[task]["output_text"] += list(br.output_text)
                    info[task]["output_ids"] += [list(map(int, o)) for o in br.output_ids]
            for task in group:
                if info[task]["example_ids"] != [ex.example_id for ex in examples[task][start:stop]]:
                    raise RuntimeError(f"recorder returned examples out of order in block {block} of {task}")
            # decoder blocks first, the shared encoder (which carries every task's metadata) last
            for (task, t, a), store in decoders.items():
                store.write_block(block, np.concatenate(dec[task, t, a]),
                                  describe=_describer(cat, "text_decoder", f"{task} {store.path.name}",
                                                      info[task]["example_ids"]))
            encoder.write_block(block, np.concatenate(enc), {"tasks": info},
                                describe=_describer(cat, stack, f"{'+'.join(group)} encoder",
                                                    info[group[0]]["example_ids"]))
    barrier(run, "record/recorded")
    if run.rank == 0:
        summary = {}
        for group in RECORD_GROUPS:
            st = MatrixStore(matrices(run, group[0])["encoder"])
            if st.pending_blocks():
                raise UserError(f"record stage for {'+'.join(group)} incomplete after all shards; rerun to resume")
        for task in RECORD_TASKS:
            summary[task] = _record_meta(run, task)
            atomic_write_json(run.dir("record") / task / "meta.json", summary[task])
        atomic_write_json(run.dir("record") / "catalog.json", cat.to_json())
        run.complete("record", rows={t: len(summary[t]["example_ids"]) for t in summary}, store_dtype=dtype)


def _block_info(steps, activities, long_frames: int) -> dict:
    """What a row block's marker keeps of one task; the keys a definition adds only where it is
    in force, so a paper-text record keeps its bytes."""
    info = {"example_ids": [], "output_text": [], "output_ids": [], "valid": {str(t): [] for t in steps}}
    if "prefix_mean" in activities:
        info["valid_prefix_mean"] = {str(t): [] for t in steps}
    if long_frames:
        info["frames"] = []
    return info


def _record_meta(run: Run, task: str) -> dict:
    st = MatrixStore(matrices(run, task)["encoder"])
    steps = run.cfg["record"]["steps"]
    meta = {"task": task, "modality": TASK_MODALITY[task], "example_ids": [], "langs": [],
            "output_text": [], "output_ids": [], "valid": {str(t): [] for t in steps}}
    for b in range(st.n_blocks):
        info = st.block_info(b)["tasks"][task]
        meta["example_ids"] += info["example_ids"]
        meta["output_text"] += info["output_text"]
        meta["output_ids"] += info["output_ids"]
        for key in ("valid", "valid_prefix_mean"):
            for t, flags in info.get(key, {}).items():
                meta.setdefault(key, {}).setdefault(t, []).extend(flags)
        if "frames" in info:
            meta.setdefault("frames", []).extend(info["frames"])
    meta["langs"] = [eid.split("/")[1] for eid in meta["example_ids"]]
    _leave_out_long_speech(meta, run.cfg["definitions"]["long_speech_frames"])
    tokenizer = run.model().tokenizer
    meta["step_tokens"] = step_tokens(meta["output_ids"], steps,
                                      lambda i: tokenizer.decode([i], skip_special_tokens=False))
    return meta


def step_tokens(output_ids: list[list[int]], steps, decode) -> dict[str, list[str | None]]:
    """Per step t (as a string), per example: ``decode(y_t)``, the output token its step-t
    position predicts (the t-th generated token, after SeamlessM4T's language tag or after a
    speech LLM's prompt), or None where the output ended before it. What a reader checks to
    see whether step 1 is the answer's first token or a preamble ("Sure")."""
    return {str(t): [decode(int(ys[t - 1])) if len(ys) >= t else None for ys in output_ids] for t in steps}


def _leave_out_long_speech(meta: dict, limit: int) -> None:
    """``definitions.long_speech_frames``: utterances longer than ``limit`` encoder frames leave the
    speech side, at the encoder and at every step (the authors' code pools them over the wrong
    axis, then drops the whole example by its majority-length filter); counted per language."""
    if not limit or meta["modality"] != "speech":
        return
    long = [f > limit for f in meta["frames"]]
    meta["encoder_valid"] = [not x for x in long]
    for key in ("valid", "valid_prefix_mean"):
        for flags in meta.get(key, {}).values():
            flags[:] = [ok and not x for ok, x in zip(flags, long)]
    counts = {lang: 0 for lang in dict.fromkeys(meta["langs"])}
    for lang, x in zip(meta["langs"], long):
        counts[lang] += int(x)
    meta["long_speech"] = {"frames": limit, "excluded": counts}
