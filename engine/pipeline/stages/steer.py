"""The steer stage: the steering experiment (``engine.pipeline.steering_run``) on a run's held-out
examples, with the language-control neurons and medians of its rank stage, and its artifacts:
``steering.json`` (the analysis.json "steering" section), ``steering_outputs.json`` (every
generated text) and ``steering_tables.md`` (the section as Markdown tables, shaped like the paper's).

Under torchrun every rank generates its share of the rows (pair x task x step x intervention)
into the stage's per-row checkpoints; rank 0 then scores them all (generating any row still
missing) and writes the artifacts, byte for byte what one process writes."""
from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Mapping

import numpy as np

from engine.errors import UserError
from engine.files import atomic_write_bytes, atomic_write_json, note
from engine.pipeline import launch
from engine.pipeline.run import (
    RECORD_TASKS,
    Run,
    barrier,
    load_ap,
    load_selection,
    load_sep,
    model_inputs,
    task_examples,
)
from engine.pipeline.steering_run import SteeringResult, run_steering
from engine.science.languages import steering_pairs, table_name
from engine.science.steering_scores import PAIRS, TASK_MODALITY

#: Per-row checkpoints inside the steer stage directory; removed once the stage is complete.
CHECKPOINT_SUBDIR = "rows"


def run_experiment(run, share=None) -> SteeringResult | None:
    """The pipeline's "steer" stage without its artifacts: run the experiment from a run's data,
    speech and rank stages and return its result (the analysis.json "steering" section and every
    generated text; ``write_steering_artifacts`` writes them).

    Reads ``run.cfg["steer"]`` (k, tau, positions, max_new_tokens, random_control, seed, and
    optionally fasttext_model: a path to lid.176.bin), the held-out ASR/TR examples, the ASR
    decoder AP rows, their point-biserial r (tie-breaker) and on_p50 medians of every step. Pairs: ``steer.pairs``
    (engine.science.languages.steering_pairs: the default, the paper's 8, restricted to
    ``data.langs``; explicit pairs must all be recorded). Writes each generation as it finishes
    into the stage directory's ``rows/`` (a rerun resumes from them). ``share``: only generate
    the rows it selects into ``rows/`` and return None (``run_steering``).
    """
    cfg, steer_cfg = run.cfg, run.cfg["steer"]
    steps = tuple(int(t) for t in cfg["record"]["steps"])
    sentences = cfg["definitions"]["steer_sentences"]
    if sentences == "identification":
        # the authors steer the first sentences of the identification files (--seed 1 101)
        first = set(load_selection(run).identify_ids[:cfg["data"]["n_steer"]])
        held = [x for task in TASK_MODALITY for x in task_examples(run, task, "identify") if x.sentence_id in first]
    else:
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
    return run_steering(
        run.model(), run.catalog(), held_out=held, identify=ident, ap=ap, on_p50=on_p50,
        langs=langs, pairs=pairs, k=int(steer_cfg["k"]), steps=steps, interventions=interventions,
        positions=steer_cfg.get("positions", "all"), tau=float(steer_cfg["tau"]),
        seed=int(steer_cfg.get("seed", 0)), batch_size=int(cfg["model"]["batch_size"]),
        max_new_tokens=steer_cfg.get("max_new_tokens"), fasttext_model=steer_cfg.get("fasttext_model") or None,
        to_input=lambda x: model_inputs(run, [x])[0], separation=separation,
        checkpoint_dir=run.dir("steer") / CHECKPOINT_SUBDIR, share=share, sentences=sentences,
        pieces=run.model().pieces, by_pieces=cfg["definitions"]["control_rate"] == "sentencepiece",
        texts={(s.sentence_id, lang): text for s in load_selection(run).sentences for lang, text in s.texts.items()})


def write_steering_artifacts(result: SteeringResult, out_dir: Path) -> list[Path]:
    """Write the stage's artifacts into ``out_dir`` (created if missing), each atomically:
    steering.json (``result.section``), steering_outputs.json (``result.outputs``) and
    steering_tables.md (``markdown_tables`` of the section, UTF-8). Returns their paths, in
    that order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "steering.json", out_dir / "steering_outputs.json", out_dir / "steering_tables.md"]
    atomic_write_json(paths[0], result.section)
    atomic_write_json(paths[1], result.outputs)
    atomic_write_bytes(paths[2], markdown_tables(result.section).encode("utf-8"))
    return paths


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
    write_steering_artifacts(result, run.dir("steer"))
    # every row is in steering_outputs.json now; the checkpoints only served resuming. Removed
    # before the marker, which lists (and later verifies) every file the directory holds
    shutil.rmtree(run.dir("steer") / CHECKPOINT_SUBDIR, ignore_errors=True)
    run.complete("steer")


# ---------------------------------------------------------------------------------------------
# steering_tables.md


def _fmt(value) -> str:
    """A percentage, probability or ratio with 2 decimals; "–" where there is none (None, NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2f}"


def _cell(value: str) -> str:
    """Free text as one Markdown table cell: "|" escaped, newlines as spaces."""
    return value.replace("|", "\\|").replace("\n", " ")


def markdown_tables(section: Mapping) -> str:
    """Markdown of the steering section (``SteeringResult.section``): Tables 1 (script %), 3
    (effect ratio), 4 (fastText %), 2 (qualitative), the random control and the unsteered
    baseline, shaped like the paper's. Percentages and ratios with 2 decimals, "–" where
    missing; no trailing newline."""
    rows = section["rows"]
    index = {(r["src"], r["tgt"], r["task"], r["step"], r["intervention"]): r for r in rows}
    steps = sorted({r["step"] for r in rows if r["step"] is not None})
    # the paper's pairs in its order, then any others sorted
    pair_order = [(s, t) for s, t in PAIRS if any(k[:2] == (s, t) for k in index)]
    pair_order += sorted({k[:2] for k in index} - set(pair_order))

    def grid(title, kind, cols):
        return _grid(title, kind, cols, index, steps, pair_order)

    out = grid("Table 1: script of steered outputs (%), median intervention", "median",
               [("Latin", "latin"), ("CJK", "cjk")])
    if any(r.get("control_by") == "langid" or not {"latin", "cjk"} <= set(r) for r in rows):
        out += grid("Control rate toward the target (%), median intervention: by script, or by "
                    "language ID where both languages share a script", "median", [("CR", "control_rate")])
    out += grid("Table 4: fastText probability (%), median intervention", "median",
                [("src", "ft_src"), ("tgt", "ft_tgt")])
    if any(r["intervention"] == "random" for r in rows):
        out += grid("Random control: script (%), same number of random decoder neurons", "random",
                    [("Latin", "latin"), ("CJK", "cjk"), ("ft tgt", "ft_tgt")])
    out += _baseline_table([r for r in rows if r["intervention"] == "none"])
    out += _effect_ratio_table(section["effect_ratio"])
    out += _qualitative_tables(section["qualitative"])
    return "\n".join(out)


def _grid(title: str, kind: str, cols: list[tuple[str, str]], index: Mapping, steps: list[int],
          pair_order: list[tuple[str, str]]) -> list[str]:
    """One table of intervention ``kind``: a row per (src, task, tgt), a column per step and
    (label, row key) of ``cols``; rows with no value at all are left out."""
    lines = [f"### {title}", "",
             "| Task lang | Task | Intervention | " + " | ".join(
                 f"t={t} {c}" for t in steps for c, _ in cols) + " |",
             "|---|---|---|" + "---|" * (len(steps) * len(cols))]
    # the paper's order: source language, then task, then target
    sources = list(dict.fromkeys(src for src, _ in pair_order))
    for src, task, tgt in [(s, task, t) for s in sources for task in TASK_MODALITY
                           for s2, t in pair_order if s2 == s]:
        cells = [_fmt(index[(src, tgt, task, t, kind)].get(key)) if (src, tgt, task, t, kind) in index
                 else "–" for t in steps for _, key in cols]
        if all(c == "–" for c in cells):
            continue
        lines.append(f"| {table_name(src)} | {task} | {table_name(tgt)} | " + " | ".join(cells) + " |")
    return lines + [""]


def _baseline_table(base: list[Mapping]) -> list[str]:
    """The unsteered rows, one line each in section order; nothing when there are none."""
    if not base:
        return []
    return (["### Baseline: no intervention", "",
             "| Task lang | Task | scored toward | Latin | CJK | control rate | ft src | ft tgt | n |",
             "|---|---|---|---|---|---|---|---|---|"]
            + [f"| {table_name(r['src'])} | {r['task']} | {table_name(r['tgt'])} | "
               f"{_fmt(r.get('latin'))} | {_fmt(r.get('cjk'))} | {_fmt(r['control_rate'])} | "
               f"{_fmt(r['ft_src'])} | {_fmt(r['ft_tgt'])} | {r['n']} |" for r in base]
            + [""])


def _effect_ratio_table(er: Mapping) -> list[str]:
    """Table 3 (pairs by step, then source and target name), the means per step and, when
    computed, the direction of each pair's ratio between two steps."""
    out = [f"### Table 3: cross-modal effect ratio CR_TR / CR_ASR (τ = {er['tau']:g})", "",
           "| Task lang | Intervention | t | ASR | TR | Ratio |", "|---|---|---|---|---|---|"]
    for p in sorted(er["pairs"], key=lambda p: (p["step"], table_name(p["src"]), table_name(p["tgt"]))):
        ratio = (f"excluded ({p.get('reason', 'ASR < τ')})" if p["excluded"] else _fmt(p["ratio"]))
        out.append(f"| {table_name(p['src'])} | {table_name(p['tgt'])} | {p['step']} | "
                   f"{_fmt(p['cr_asr'])} | {_fmt(p['cr_tr'])} | {ratio} |")
    out += ["", "Mean over valid pairs: " + ", ".join(f"t={t}: {_fmt(v)}" for t, v in er["mean"].items()), ""]
    if er.get("direction"):
        d0 = er["direction"][0]
        out += [f"Direction t={d0['from']} → t={d0['to']}: " + ", ".join(
            f"{d['src']}→{d['tgt']} " + ("–" if d["rising"] is None else ("rises" if d["rising"] else "falls"))
            for d in er["direction"]), ""]
    return out


def _qualitative_tables(qualitative: list[Mapping]) -> list[str]:
    """Table 2: per qualitative row, its gold, steered ASR and steered text-repetition output."""
    out = []
    for q in qualitative:
        out += [f"### Table 2: {table_name(q['src'])} → {table_name(q['tgt'])}, t={q['step']} (sentence {q['sentence_id']})",
                "", "| Condition | Output |", "|---|---|",
                f"| Gold | {_cell(q['gold'])} |", f"| ASR | {_cell(q['asr'])} |",
                f"| Text repetition | {_cell(q['tr'])} |", ""]
    return out
