"""The steer stage: the steering experiment (``engine.pipeline.steering_run``) on a run's held-out
examples, with the language-control neurons and medians of its rank stage.

Under torchrun every rank generates its share of the rows (pair x task x step x intervention)
into the stage's per-row checkpoints; rank 0 then scores them all (generating any row still
missing) and writes the artifacts, byte for byte what one process writes."""
from __future__ import annotations

import shutil

import numpy as np

from engine.errors import UserError
from engine.files import atomic_write_bytes, atomic_write_json, note
from engine.pipeline import launch
from engine.pipeline.run import RECORD_TASKS, Run, barrier, load_ap, load_sep, model_inputs, task_examples
from engine.pipeline.steering_run import TASK_MODALITY, markdown_tables, run_steering
from engine.science.languages import steering_pairs

#: Per-row checkpoints inside the steer stage directory; removed once the stage is complete.
CHECKPOINT_SUBDIR = "rows"


def run_experiment(run, share=None) -> dict | None:
    """The pipeline's "steer" stage: run the experiment from a run's data, speech and rank
    stages and return the analysis.json "steering" section.

    Reads ``run.cfg["steer"]`` (k, tau, positions, max_new_tokens, random_control, seed, and
    optionally fasttext_model: a path to lid.176.bin), the held-out ASR/TR examples, the ASR
    decoder AP rows, their point-biserial r (tie-breaker) and on_p50 medians of every step. Pairs: ``steer.pairs``
    (engine.science.languages.steering_pairs: the default, the paper's 8, restricted to
    ``data.langs``; explicit pairs must all be recorded). Also writes ``steering_outputs.json``
    (every generated text) and ``steering_tables.md`` into the stage directory, and each
    generation as it finishes into its ``rows/`` (a rerun resumes from them). ``share``: only
    generate the rows it selects into ``rows/`` and return None (``run_steering``).
    """
    cfg, steer_cfg = run.cfg, run.cfg["steer"]
    steps = tuple(int(t) for t in cfg["record"]["steps"])
    held = [x for task in TASK_MODALITY for x in task_examples(run, task, "steer")]
    ident = [x for task in RECORD_TASKS for x in task_examples(run, task, "identify")]
    rank_dir = run.dir("rank") / "ASR"
    ap = {t: load_ap(run, "ASR", f"decoder_t{t}") for t in steps}
    separation = {t: load_sep(run, "ASR", f"decoder_t{t}") for t in steps}
    on_p50 = {t: np.load(rank_dir / f"decoder_t{t}_on_p50.npy") for t in steps}
    langs = list(cfg["data"]["langs"])
    pairs = steering_pairs(steer_cfg["pairs"], langs)
    if not pairs:
        raise UserError(f"no pair of steer.pairs has both languages among data.langs {langs}")
    interventions = ("median", "random", "none") if steer_cfg.get("random_control", True) else ("median", "none")
    result = run_steering(
        run.model(), run.catalog(), held_out=held, identify=ident, ap=ap, on_p50=on_p50,
        langs=langs, pairs=pairs, k=int(steer_cfg["k"]), steps=steps, interventions=interventions,
        positions=steer_cfg.get("positions", "all"), tau=float(steer_cfg["tau"]),
        seed=int(steer_cfg.get("seed", 0)), batch_size=int(cfg["model"]["batch_size"]),
        max_new_tokens=steer_cfg.get("max_new_tokens"), fasttext_model=steer_cfg.get("fasttext_model") or None,
        to_input=lambda x: model_inputs(run, [x])[0], separation=separation,
        checkpoint_dir=run.dir("steer") / CHECKPOINT_SUBDIR, share=share)
    if result is None:
        return None
    out_dir = run.dir("steer")
    atomic_write_json(out_dir / "steering_outputs.json", result.outputs)
    atomic_write_bytes(out_dir / "steering_tables.md", markdown_tables(result.section).encode("utf-8"))
    return result.section


def stage_steer(run: Run) -> None:
    saved = len(list((run.dir("steer") / CHECKPOINT_SUBDIR).glob("*.json")))
    if run.rank == 0 and saved:
        note(f"steer: resuming, {saved} generations already saved")
    barrier(run, "steer/counted")  # before any rank adds to them
    if run.world > 1:
        run_experiment(run, share=launch.current().mine)
        barrier(run, "steer/rows")
        if run.rank != 0:
            return
    result = run_experiment(run)  # resumes from the rows a killed run finished
    atomic_write_json(run.dir("steer") / "steering.json", result)
    # every row is in steering_outputs.json now; the checkpoints only served resuming. Removed
    # before the marker, which lists (and later verifies) every file the directory holds
    shutil.rmtree(run.dir("steer") / CHECKPOINT_SUBDIR, ignore_errors=True)
    run.complete("steer")
