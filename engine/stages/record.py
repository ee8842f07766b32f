"""The record stage: every catalog neuron of every identification example into the activation store.

Progress is kept per row block of the store, so a run killed at any moment resumes where it
stopped and writes the same bytes as an uninterrupted run. Under ``torchrun`` (``WORLD_SIZE``
> 1) every process records a disjoint shard of the row blocks into the same store.
"""
from __future__ import annotations

import numpy as np

from engine.errors import UserError
from engine.run import (RECORD_TASKS, TASK_MODALITY, Run, barrier, matrices, model_inputs, progress,
                        task_examples)
from engine.store import MatrixStore, atomic_write_json


def stage_record(run: Run) -> None:
    from engine.recorder import record_batches

    r = run.cfg["record"]
    cat = run.catalog()
    for task in RECORD_TASKS:
        examples = task_examples(run, task, "identify")
        enc_stack = "speech_encoder" if TASK_MODALITY[task] == "speech" else "text_encoder"
        widths = {"encoder": cat.n_neurons(enc_stack)}
        widths.update({f"decoder_t{t}": cat.n_neurons("text_decoder") for t in r["steps"]})
        stores = {name: MatrixStore.create(path, len(examples), widths[name], rows_per_block=r["rows_per_block"],
                                           dtype=r["store_dtype"], attrs={"task": task, "matrix": name})
                  for name, path in matrices(run, task).items()}
        first = next(iter(stores.values()))
        pending = sorted(set().union(*(s.pending_blocks() for s in stores.values())))
        mine = [b for b in pending if b % run.world == run.rank]
        for block in progress(mine, desc=f"record {task}", unit="block"):
            start, stop = first.block_rows(block)
            inputs = model_inputs(run, examples[start:stop])
            enc, dec, info = [], {t: [] for t in r["steps"]}, {"example_ids": [], "output_text": [],
                                                              "output_ids": [], "valid": {}}
            valid = {t: [] for t in r["steps"]}
            for br in record_batches(run.model(), cat, inputs, steps=tuple(r["steps"]),
                                     batch_size=run.cfg["model"]["batch_size"], prefix=r["prefix"],
                                     max_new_tokens=r["max_new_tokens"]):
                enc.append(br.encoder)
                for t in r["steps"]:
                    dec[t].append(br.decoder[t])
                    valid[t].extend(bool(v) for v in br.valid[t])
                info["example_ids"] += list(br.example_ids)
                info["output_text"] += list(br.output_text)
                info["output_ids"] += [list(map(int, o)) for o in br.output_ids]
            if info["example_ids"] != [ex.example_id for ex in examples[start:stop]]:
                raise RuntimeError(f"recorder returned examples out of order in block {block} of {task}")
            info["valid"] = {str(t): valid[t] for t in r["steps"]}
            # decoder blocks first, encoder (which carries the block's metadata) last
            for t in r["steps"]:
                stores[f"decoder_t{t}"].write_block(block, np.concatenate(dec[t]))
            stores["encoder"].write_block(block, np.concatenate(enc), info)
    barrier(run)
    if run.rank == 0:
        summary = {}
        for task in RECORD_TASKS:
            st = MatrixStore(matrices(run, task)["encoder"])
            if st.pending_blocks():
                raise UserError(f"record stage for {task} incomplete after all shards; rerun to resume")
            summary[task] = _record_meta(run, task)
            atomic_write_json(run.dir("record") / task / "meta.json", summary[task])
        atomic_write_json(run.dir("record") / "catalog.json", cat.to_json())
        run.complete("record", rows={t: len(summary[t]["example_ids"]) for t in summary})

def _record_meta(run: Run, task: str) -> dict:
    st = MatrixStore(matrices(run, task)["encoder"])
    meta = {"task": task, "modality": TASK_MODALITY[task], "example_ids": [], "langs": [],
            "output_text": [], "valid": {str(t): [] for t in run.cfg["record"]["steps"]}}
    for b in range(st.n_blocks):
        info = st.block_info(b)
        meta["example_ids"] += info["example_ids"]
        meta["output_text"] += info["output_text"]
        for t in meta["valid"]:
            meta["valid"][t] += info["valid"][t]
    meta["langs"] = [eid.split("/")[1] for eid in meta["example_ids"]]
    return meta
