"""Whole stages: ``COMPLETE.json``, the last write of a stage, and what damage found later undoes.

A stage directory is marked complete by ``COMPLETE.json`` (``mark_complete``), which lists every
file of the directory with its size and sha256 (zarr chunks: size only, since zarr checksums
their content on every read). ``verify_complete`` checks that listing before anything is
trusted: a garbage, empty or stale marker, or a missing, truncated or altered artifact, is
reported file by file and never taken as complete. ``invalidate`` removes exactly what a damaged
file covers (inside an activation matrix: its row block, or the matrix), so a rerun computes that
again and nothing else.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from engine.files import Damaged, atomic_write_json, file_digest, read_json
from engine.pipeline.store import MatrixStore, is_chunk_file

COMPLETE = "COMPLETE.json"


# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """Outcome of ``verify_complete``: ``complete`` only when the marker and every artifact are whole.

    ``damaged`` lists what was found wrong (empty when the directory is complete, or simply has
    no marker yet); ``info`` is the parsed marker when it could be read.
    """

    complete: bool
    damaged: tuple[Damaged, ...] = ()
    info: dict | None = None


def _ignored(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return rel == COMPLETE or name.startswith(".") or name.endswith((".tmp", ".partial"))


def artifact_digests(directory: Path, size_only: Callable[[str], bool] = is_chunk_file) -> dict:
    """``{relative path: file_digest}`` of every file under ``directory`` but the marker and temporaries."""
    directory = Path(directory)
    out = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and not _ignored(rel):
            out[rel] = file_digest(path, content=not size_only(rel))
    return out


def mark_complete(directory: Path, info: dict, volatile: Sequence[str] = ()) -> None:
    """Mark a stage directory complete: the last write of a stage, atomic.

    The marker holds ``info`` plus ``artifacts``, the size and sha256 of every file in the
    directory, against which ``verify_complete`` checks them before they are trusted again.
    ``volatile`` names files (relative paths) left out: nothing trusts them and they differ
    between identical runs by design (a wall time), so the marker itself stays reproducible.
    """
    directory = Path(directory)
    artifacts = {rel: d for rel, d in artifact_digests(directory).items() if rel not in set(volatile)}
    atomic_write_json(directory / COMPLETE, {**info, "artifacts": artifacts})


def verify_complete(directory: Path, expect: dict | None = None) -> Verdict:
    """Check a stage directory's ``COMPLETE.json`` and every artifact it lists.

    ``expect`` holds marker fields that must match (e.g. the stage key). No marker: not complete,
    nothing damaged. A marker that is empty, not JSON, stale or without an artifact list, or an
    artifact that is missing or differs in size or sha256: not complete, each problem named.
    Files added since completion are not judged (nothing trusted them).
    """
    directory = Path(directory)
    marker = directory / COMPLETE
    if not marker.exists():
        return Verdict(False)
    try:
        info = read_json(marker, "completion marker")
    except Damaged as exc:
        return Verdict(False, (exc,))
    if not isinstance(info, dict) or not isinstance(info.get("artifacts"), dict):
        return Verdict(False, (Damaged(marker, "is not a whole completion marker (no artifact list; an older version wrote it?)"),))
    for field, value in (expect or {}).items():
        if info.get(field) != value:
            return Verdict(False, (Damaged(marker, f"belongs to another run ({field} {info.get(field)!r}, "
                                                   f"expected {value!r})"),), info)
    damaged = []
    for rel, digest in sorted(info["artifacts"].items()):
        path = directory / rel
        if not path.is_file():
            damaged.append(Damaged(path, "is missing"))
            continue
        try:
            actual = file_digest(path, content="sha256" in digest)
        except OSError as exc:
            damaged.append(Damaged(path, f"is unreadable ({exc.strerror})"))
            continue
        if actual["size"] != digest.get("size"):
            damaged.append(Damaged(path, f"has {actual['size']} bytes, not the {digest.get('size')} written"))
        elif actual.get("sha256") != digest.get("sha256"):
            damaged.append(Damaged(path, "differs from what was written (sha256 mismatch)"))
    return Verdict(not damaged, tuple(damaged), info)


def is_complete(directory: Path) -> bool:
    """Whether ``directory`` is marked complete and every artifact it lists is whole."""
    return verify_complete(directory).complete


def covering(damaged: Sequence[Damaged]) -> list[Damaged]:
    """``damaged`` without the files of a matrix whose layout is itself damaged (it goes whole)."""
    gone = {d.path.parent for d in damaged if d.path.name == "layout.json"}
    return [d for d in damaged if d.path.name == "layout.json" or not gone & set(d.path.parents)]


def invalidate(directory: Path, damaged: Damaged) -> None:
    """Remove a damaged file so it can never be taken, and the directory's completion marker.

    Inside a MatrixStore only what the file covers goes: a chunk or a row-block marker costs
    its row block; the layout or zarr metadata, the whole matrix.
    """
    directory, path = Path(directory), damaged.path
    (directory / COMPLETE).unlink(missing_ok=True)
    if path.name == COMPLETE:
        return
    matrix = next((p for p in path.parents if (p / "layout.json").exists() or p / "layout.json" == path), None)
    if matrix is None or directory not in matrix.parents:
        path.unlink(missing_ok=True)
        return
    rel = path.relative_to(matrix).parts
    store = MatrixStore(matrix)
    try:
        rows_per_block = store.layout["rows_per_block"]
        chunk_rows = store.array.chunks[0]
    except Exception:  # noqa: BLE001 - layout or zarr metadata unreadable: the matrix goes
        shutil.rmtree(matrix, ignore_errors=True)
        return
    if rel[0] == "blocks":
        path.unlink(missing_ok=True)
    elif is_chunk_file(path.relative_to(directory).as_posix()):
        store.invalidate_block(int(rel[-2]) * chunk_rows // rows_per_block)
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(matrix, ignore_errors=True)
