"""The package's shape: data flows one way, and the README's layout table says which way.

The table that opens the README's "Layout" section is the one description of the layers: each
row names a folder of ``engine/`` (or a group of its top-level files), what it holds, and the
rows it may import. This test reads that table, finds each module's row from its path, and
checks the code against it:

- every module of ``engine/`` has exactly one row, and every row names files that exist;
- a row may import only rows above it (data flows down the table) unless it says "every folder";
- no module imports a row its own row does not name, counting function-local imports too (a
  lazy import is still a dependency); no import cycle; no stage imports another stage;
- no private name (``_x``) of one module is used by another, and no hook is registered outside
  ``engine/model/hooks.py``, the one hooking surface.

Each check is a function of plain data, and a test plants a violation to show it fails.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENGINE = REPO / "engine"
README = REPO / "README.md"
HOOK_CALLS = {"register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
              "register_full_backward_pre_hook", "register_backward_hook"}


@dataclass(frozen=True)
class Row:
    name: str                  # "science/" for a folder, "base files" for a group of top-level files
    folder: str | None         # engine-relative dotted package of a folder row ("science")
    files: tuple[str, ...]     # top-level module names of a file row ("errors", "engine" for __init__)
    allowed: tuple[str, ...]   # names of the rows it may import
    every: bool                # "every folder"


def layout_rows(readme: str) -> list[Row]:
    """The rows of the table that opens README's "## Layout" section, top first."""
    section = readme[readme.index("## Layout\n"):]
    lines = [ln for ln in section.splitlines()[1:] if ln.strip()]
    table = []
    for ln in lines:
        if not ln.startswith("|"):
            break
        table.append([c.strip() for c in ln.strip().strip("|").split("|")])
    assert table and table[0] == ["folder", "what it holds", "may import"], f"unexpected layout header {table[:1]}"
    rows = []
    for first, _, third in table[2:]:
        tokens = re.findall(r"`([^`]+)`", first)
        if tokens[0] == "engine/":
            name = first.split("`engine/`", 1)[1].split(":", 1)[0].strip()
            files = tuple("engine" if t == "__init__.py" else t.removesuffix(".py") for t in tokens[1:])
            folder = None
        else:
            name, folder, files = tokens[0].removeprefix("engine/"), tokens[0].removeprefix("engine/").strip("/"), ()
        every = third == "every folder"
        allowed = () if every or third == "nothing of the engine" else tuple(
            item.strip().strip("`") for item in third.split(","))
        rows.append(Row(name, folder, files, allowed, every))
    return rows


def modules() -> dict[str, Path]:
    """engine-relative dotted name of every module ("science.ranking", "engine" for the package)."""
    out = {}
    for path in ENGINE.rglob("*.py"):
        rel = path.relative_to(ENGINE).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts) or "engine"] = path
    return out


def row_of(module: str, rows: list[Row]) -> Row | None:
    found = [r for r in rows if (r.folder and (module == r.folder or module.startswith(r.folder + ".")))
             or module in r.files]
    return found[0] if len(found) == 1 else None


def _target(name: str, known) -> str | None:
    """engine-relative module name of an imported ``engine...`` name, None if outside engine."""
    if name != "engine" and not name.startswith("engine."):
        return None
    rel = name.removeprefix("engine").removeprefix(".") or "engine"
    while rel not in known and "." in rel:
        rel = rel.rsplit(".", 1)[0]
    return rel if rel in known else "engine"


def imports_of(source: str, known) -> set[str]:
    """Engine modules that ``source`` imports, anywhere in it."""
    deps = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from engine.pkg import x` names the submodule x where there is one
            names = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}".removeprefix(
                "engine.") in known] or [node.module]
        else:
            continue
        deps |= {t for t in (_target(n, known) for n in names) if t is not None}
    return deps


def graph(sources: dict[str, str] | None = None) -> dict[str, set[str]]:
    """module -> the engine modules it imports. A package counts where an import names it (its
    ``__init__`` runs for what it holds), not where it is only the parent of a named module."""
    sources = sources or {m: p.read_text(encoding="utf-8") for m, p in modules().items()}
    known = set(sources)
    return {m: {d for d in imports_of(src, known) if d != m} - ({"engine"} if m != "engine" else set())
            for m, src in sources.items()}


def disallowed(g: dict[str, set[str]], rows: list[Row]) -> list[str]:
    """One line per import the layout table does not allow, and per module without a row."""
    out = []
    by_name = {r.name: r for r in rows}
    for m in sorted(g):
        row = row_of(m, rows)
        if row is None:
            out.append(f"{m}: no row of the README's layout table holds it")
            continue
        for d in sorted(g[m]):
            target = row_of(d, rows)
            if target is None or target == row or row.every:
                continue
            if target.name not in row.allowed:
                out.append(f"{m} ({row.name}) imports {d} ({target.name}), which '{row.name}' may not import")
        assert all(a in by_name for a in row.allowed), f"row {row.name} names unknown rows {row.allowed}"
    return out


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


def private_uses(module: str, source: str, known) -> list[str]:
    """Private names (``_x``, not dunders) of other engine modules that ``source`` uses."""
    out = []
    aliases = {}  # local name -> engine module it is bound to
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                t = _target(a.name, known)
                if t and a.asname:
                    aliases[a.asname] = t
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            src = _target(node.module, known)
            for a in node.names:
                sub = f"{node.module}.{a.name}".removeprefix("engine.")
                if sub in known:
                    aliases[a.asname or a.name] = sub
                elif src and src != module and a.name.startswith("_") and not a.name.startswith("__"):
                    out.append(f"{module} imports {a.name} from {src}")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and aliases[node.value.id] != module and node.attr.startswith("_") and not node.attr.startswith("__")):
            out.append(f"{module} uses {aliases[node.value.id]}.{node.attr}")
    return out


def hook_registrations(source: str) -> list[int]:
    """Lines of ``source`` that register a torch hook."""
    return [n.lineno for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute) and n.attr in HOOK_CALLS]


# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rows() -> list[Row]:
    return layout_rows(README.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    return {m: p.read_text(encoding="utf-8") for m, p in modules().items()}


def test_every_row_of_the_layout_table_exists_and_flows_down(rows):
    names = [r.name for r in rows]
    for i, r in enumerate(rows):
        if r.folder:
            assert (ENGINE / r.folder.replace(".", "/")).is_dir(), f"README layout names missing folder engine/{r.name}"
        for f in r.files:
            assert (ENGINE / ("__init__.py" if f == "engine" else f"{f}.py")).is_file(), f"README names missing {f}"
        above = set(names[:i])
        assert r.every or set(r.allowed) <= above, f"row {r.name} may import {set(r.allowed) - above}, not above it"


def test_every_import_is_one_the_layout_table_allows(rows, sources):
    found = disallowed(graph(sources), rows)
    assert not found, "imports against the README's layout table:\n" + "\n".join(found)


def test_a_planted_upward_import_fails_the_layout(rows, sources):
    planted = {**sources, "science.ranking": sources["science.ranking"] + "\nfrom engine.pipeline import run\n"}
    assert disallowed(graph(planted), rows) == [
        "science.ranking (science/) imports pipeline.run (pipeline/), which 'science/' may not import"]
    assert disallowed(graph({**sources, "stray": ""}), rows) == ["stray: no row of the README's layout table holds it"]


def test_no_import_cycle_in_engine(sources):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    found = cycles(graph(sources))
    assert not found, f"import cycles in engine/: {found}"


@pytest.mark.parametrize("stage", ["data", "speech", "record", "rank", "compare", "steer", "report"])
def test_each_stage_owns_its_module_and_imports_no_other_stage(stage, sources):
    g = graph(sources)
    name = f"pipeline.stages.{stage}"
    assert name in g
    others = {d for d in g[name] if d.startswith("pipeline.stages.")}
    assert not others, f"{name} imports {others}"


def test_no_private_name_is_used_outside_its_module(sources):
    known = set(sources)
    assert private_uses("a.b", "from engine.science.overlap import _ranks\nfrom engine.science import overlap as ov\n"
                                "ov._centred(1)\n", known) == [
        "a.b imports _ranks from science.overlap", "a.b uses science.overlap._centred"]
    found = [line for m, src in sorted(sources.items()) for line in private_uses(m, src, known)]
    assert not found, "private names used across modules:\n" + "\n".join(found)


def test_every_hook_is_registered_through_model_hooks(sources):
    assert hook_registrations("m.register_forward_pre_hook(f, with_kwargs=True)\n") == [1]
    found = {m: lines for m, src in sources.items() if m != "model.hooks" and (lines := hook_registrations(src))}
    assert not found, f"hooks registered outside engine/model/hooks.py: {found}"
