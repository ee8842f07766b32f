"""The speech stage: one waveform per (sentence, language), synthesised or natural, cached by content.

Under torchrun every rank synthesises its share of the sentences into the shared cache; rank 0
then finds them all there and writes the manifest, byte for byte what one process writes."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from engine.errors import UserError
from engine.files import atomic_write_json
from engine.pipeline import launch
from engine.pipeline.inputs.speech import synthesize_sentences
from engine.pipeline.inputs.tts import NaturalBackend, make_backend
from engine.pipeline.run import Run, barrier, load_selection, progress, speech_cache_dir


def stage_speech(run: Run) -> None:
    s = run.cfg["speech"]
    options = {"speaker": s["voice"]} if (s["voice"] and s["backend"] == "xtts") else {}
    if s["voice"] and s["backend"] == "espeak":
        options = {"variant": s["voice"]}
    if s["backend"] == "xtts" and run.cfg["model"]["device"].startswith("cuda"):
        options["device"] = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if run.world > 1 else "cuda"
    if s["backend"] == "natural":
        backend = NaturalBackend.from_fleurs(load_selection(run), s["voice"])
    else:
        backend = make_backend(s["backend"], **options)
    sel = load_selection(run)
    if run.cfg["definitions"]["synthesis_text"] == "normalized" and sel.source == "fleurs":
        # the authors synthesise FLEURS' normalised transcription (the embedded corpus has none)
        if not all(s.normalized for s in sel.sentences):
            raise UserError(f"{run.dir('data') / 'selection.json'} has no normalised transcriptions (written "
                            "before they were kept): rerun the data stage with --stages data --force")
        sel = dataclasses.replace(sel, sentences=tuple(s.spoken() for s in sel.sentences))
    if run.world > 1:
        synthesize_sentences(launch.current().mine(sel.sentences), sel.langs, backend, speech_cache_dir(run))
        barrier(run, "speech/synthesised")
        if run.rank != 0:
            return
    bar = progress(total=len(sel.sentences) * len(sel.langs), desc="speech", unit="utt")
    try:
        result = synthesize_sentences(sel.sentences, sel.langs, backend, speech_cache_dir(run),
                                      progress=lambda done, total: bar.update(done - bar.n))
    finally:
        bar.close()
    cache = speech_cache_dir(run)
    # paths relative to the shared cache and no cache-hit counts: the manifest depends only on
    # the inputs, so identical runs write identical bytes
    manifest = {"paths": [[sid, lang, Path(p).relative_to(cache).as_posix()] for (sid, lang), p in
                          sorted(result.paths.items())],
                # size, sha256 and sample count of every wav, checked before the audio is used again
                "audio": {Path(p).relative_to(cache).as_posix(): result.records[p] for p in result.paths.values()},
                "failures": [{"sentence_id": f.item_id, "lang": f.lang, "reason": f.reason} for f in result.failures],
                "failure_counts": result.failure_counts()}
    if result.failures:
        print(f"speech: {len(result.failures)} utterance(s) failed and are excluded: {result.failure_counts()}")
    atomic_write_json(run.dir("speech") / "manifest.json", manifest)
    run.complete("speech", failed=len(result.failures))
