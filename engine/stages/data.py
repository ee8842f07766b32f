"""The data stage: which sentences, in which languages, for identification and for steering."""
from __future__ import annotations

from engine.run import Run
from engine.store import atomic_write_json


def stage_data(run: Run) -> None:
    from engine.data.corpus import select_embedded
    from engine.data.fleurs import select_fleurs

    d = run.cfg["data"]
    n = d["n_identify"] + d["n_steer"]
    if d["source"] == "embedded":
        sel = select_embedded(d["langs"], n=n, seed=d["seed"], n_steer=d["n_steer"])
    else:
        sel = select_fleurs(d["langs"], n=n, seed=d["seed"], n_steer=d["n_steer"], root=d["fleurs_root"] or None)
    atomic_write_json(run.dir("data") / "selection.json", _selection_json(sel))
    run.complete("data", n_sentences=len(sel.sentences))

def _selection_json(sel) -> dict:
    return {"sentences": [{"sentence_id": s.sentence_id, "texts": s.texts, "readings": s.readings}
                          for s in sel.sentences],
            "langs": list(sel.langs), "identify_ids": list(sel.identify_ids), "steer_ids": list(sel.steer_ids),
            "source": sel.source, "seed": sel.seed,
            "audio_files": [[sid, lang, f] for (sid, lang), f in sorted(sel.audio_files.items())]}
