"""The package's shape: data flows one way and the imports show it.

Every ``import`` in ``engine/`` counts, function-local ones too (a lazy import is still a
dependency). Two checks: no cycle among engine modules, and no module imports one of a higher
layer. A new module must be placed in LAYERS; that is the point: its place is a decision.
"""
import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parent.parent / "engine"

#: Lowest first. A module may import its own layer and those below, never above.
LAYERS = (
    ("base", ("errors", "files", "hooks", "data.languages", "ap_kernels")),
    ("data", ("data", "data.corpus", "data.fleurs", "data.speech", "data.tasks")),
    # what a speech-LLM family is (module paths, tables, pinned configs, prompts): one module each
    ("models", ("speech_llm", "speech_llm.shape", "speech_llm.qwen2_audio", "speech_llm.voxtral",
                "speech_llm.mistral")),
    ("mechanics", ("catalog", "lm_recorder", "fingerprint", "loader", "ranks", "recorder", "store")),
    ("science", ("ranking", "overlap", "intervals", "crossmodal", "control", "langid", "steering", "steering_eval")),
    ("settings", ("config",)),  # validates a profile against the corpus and the steering pairs
    ("run", ("run",)),
    ("stages", ("stages", "stages.data", "stages.speech", "stages.record", "stages.rank", "stages.compare",
                "stages.steer", "stages.report")),
    ("orchestration", ("pipeline",)),
    ("outputs", ("claims", "baselines", "glance", "plots", "report", "results", "estimate")),
    ("entry points", ("engine", "__main__", "cli", "rehearse", "benchmarks", "benchmarks.ap",
                      "benchmarks.bootstrap", "benchmarks.compare", "benchmarks.coverage", "benchmarks.record")),
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in ENGINE.rglob("*.py"):
        rel = path.relative_to(ENGINE).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts) or "engine"] = path
    return out


def _target(name: str, modules) -> str | None:
    """engine-relative module name of an imported ``engine...`` name, None if outside engine."""
    if name != "engine" and not name.startswith("engine."):
        return None
    rel = name.removeprefix("engine").removeprefix(".") or "engine"
    while rel not in modules and "." in rel:
        rel = rel.rsplit(".", 1)[0]
    return rel if rel in modules else "engine"


def imports_of(path: Path, modules) -> set[str]:
    deps = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from engine import x` names the submodule x where there is one
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            names = [n for n in names if _target(n, modules) != "engine" or n == node.module]
        else:
            continue
        for name in names:
            target = _target(name, modules)
            if target is not None:
                deps.add(target)
    return deps


def graph() -> dict[str, set[str]]:
    modules = _modules()
    g = {}
    for name, path in modules.items():
        deps = imports_of(path, modules) - {name}
        # a parent package named only because a child was imported is not a dependency
        g[name] = {d for d in deps if not (d == "engine" and name != "engine")} - {"stages", "data", "benchmarks"}
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_engine():
    found = cycles(graph())
    assert not found, f"import cycles in engine/: {found}"


def test_every_module_has_a_layer():
    placed = {m for _, mods in LAYERS for m in mods}
    missing = sorted(set(_modules()) - placed)
    assert not missing, f"place these modules in tests/test_architecture.py LAYERS: {missing}"


def test_nothing_imports_upward():
    level = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}
    upward = [f"{m} ({LAYERS[level[m]][0]}) imports {d} ({LAYERS[level[d]][0]})"
              for m, deps in graph().items() for d in deps
              if m in level and d in level and level[d] > level[m]]
    assert not upward, "imports against the data flow:\n" + "\n".join(upward)


@pytest.mark.parametrize("stage", ["data", "speech", "record", "rank", "compare", "steer", "report"])
def test_each_stage_owns_its_module_and_imports_no_other_stage(stage):
    g = graph()
    assert f"stages.{stage}" in g
    others = {d for d in g[f"stages.{stage}"] if d.startswith("stages.")}
    assert not others, f"stages.{stage} imports {others}"
