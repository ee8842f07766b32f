"""The report stage: analysis.json, everything the claims suite judges, from compare and steer."""
from __future__ import annotations

import json

from engine.run import RECORD_TASKS, STAGES, Run
from engine.store import atomic_write_json


def stage_report(run: Run, wall_time_s: float = 0.0) -> None:
    compare = json.loads((run.dir("compare") / "compare.json").read_text())
    steering = json.loads((run.dir("steer") / "steering.json").read_text())
    excluded = {task: json.loads((run.dir("rank") / task / "excluded.json").read_text()) for task in RECORD_TASKS}
    analysis = {
        "meta": {"profile": run.cfg["profile"]["name"], "model_id": run.cfg["model"]["id"],
                 "revision": run.weights_revision(), "data": run.cfg["data"]["source"],
                 "speech_backend": run.cfg["speech"]["backend"], "versions": run.versions,
                 "k": run.cfg["rank"]["k"], "steps": run.cfg["record"]["steps"], "langs": run.cfg["data"]["langs"],
                 "n_identify": run.cfg["data"]["n_identify"], "n_steer": run.cfg["data"]["n_steer"],
                 "stage_keys": {s: run.key(s) for s in STAGES}},
        **compare,
        "steering": steering,
        "excluded": excluded,
    }
    atomic_write_json(run.dir("report") / "analysis.json", analysis)
    # wall time differs between identical runs: kept out of analysis.json so that file is reproducible
    atomic_write_json(run.dir("report") / "timing.json", {"wall_time_s": round(wall_time_s, 1)})
    run.complete("report", volatile=("timing.json",))
