"""The data stage: which sentences, in which languages, for identification and for steering."""
from __future__ import annotations

from engine.files import atomic_write_json
from engine.pipeline.inputs.corpus import select_embedded
from engine.pipeline.inputs.fleurs import select_fleurs
from engine.pipeline.run import Run


def stage_data(run: Run) -> None:
    d = run.cfg["data"]
    n = d["n_identify"] + d["n_steer"]
    if d["source"] == "embedded":
        sel = select_embedded(d["langs"], n=n, seed=d["seed"], n_steer=d["n_steer"])
    else:
        sel = select_fleurs(d["langs"], n=n, seed=d["seed"], n_steer=d["n_steer"], root=d["fleurs_root"] or None)
    atomic_write_json(run.dir("data") / "selection.json", sel.to_json())
    run.complete("data", n_sentences=len(sel.sentences))
