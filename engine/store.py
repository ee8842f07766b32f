"""On-disk activation store: chunked, compressed, checksummed matrices ``[examples, neurons]``.

Zarr v3 is the container: it gives chunked partial reads (ranking reads neuron blocks, so RAM
does not grow with the number of neurons), zstd compression, a CRC32C checksum on every chunk
(a corrupted chunk is detected on read), and atomic chunk writes on a local file system
(a killed writer never leaves a half-written chunk under its final name).

Completion is tracked outside zarr: a row block is done only when its marker file exists,
written atomically *after* its chunks. A resumed writer rewrites every block without a marker,
so nothing half-written is ever reused. Row blocks are whole chunks, so no chunk is ever
read-modified-written and two processes writing disjoint blocks never touch the same file.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import zarr

from engine.errors import UserError

COMPLETE = "COMPLETE.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``.

    A disk-full or permission error becomes a UserError naming the path; the destination is
    never left partially written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise UserError(_os_error_message(path, exc)) from exc


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(Path(path), json.dumps(obj, indent=1, sort_keys=True).encode())


def _os_error_message(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return f"disk full while writing {path}; free space or choose another --out, then rerun to resume"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path} ({exc.strerror}); choose a writable --out directory"
    return f"cannot write {path}: {exc.strerror or exc}"


class MatrixStore:
    """One activation matrix ``[n_rows, n_cols]`` on disk, written in row blocks.

    Parameters
    ----------
    path : directory of this matrix (a zarr array plus ``blocks/`` markers).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._array = None

    # -- creation -----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, n_rows: int, n_cols: int, *, rows_per_block: int,
               cols_per_chunk: int = 8192, dtype: str = "float16", attrs: dict | None = None
               ) -> "MatrixStore":
        """Create the matrix, or reopen it if one with the same layout exists (resume).

        A matrix of another shape, dtype or block size at ``path`` is a stale artifact from
        other settings: UserError, never silently reused.
        """
        path = Path(path)
        layout = {"shape": [int(n_rows), int(n_cols)], "rows_per_block": int(rows_per_block),
                  "cols_per_chunk": int(cols_per_chunk), "dtype": str(np.dtype(dtype))}
        if n_rows < 0 or n_cols <= 0 or rows_per_block <= 0:
            raise UserError(f"bad matrix layout {layout} for {path}")
        layout_file = path / "layout.json"
        try:
            path.mkdir(parents=True, exist_ok=True)
            # torchrun shards create the same matrices at once: one creates, the others reopen
            with open(path / ".create.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if layout_file.exists():
                    old = json.loads(layout_file.read_text())
                    if old != layout:
                        raise UserError(f"store {path} holds a matrix with layout {old}, not {layout}; "
                                        "delete it or use another output directory")
                    return cls(path)
                group = zarr.open_group(path / "data", mode="a")
                group.create_array(
                    "m", shape=(n_rows, n_cols), dtype=layout["dtype"],
                    chunks=(max(1, min(rows_per_block, max(n_rows, 1))), min(cols_per_chunk, n_cols)),
                    compressors=[zarr.codecs.ZstdCodec(level=3), zarr.codecs.Crc32cCodec()],
                    fill_value=np.nan, overwrite=True, attributes=attrs or {})
                atomic_write_json(layout_file, layout)
        except OSError as exc:
            raise UserError(_os_error_message(path, exc)) from exc
        return cls(path)

    @property
    def layout(self) -> dict:
        return json.loads((self.path / "layout.json").read_text())

    @property
    def array(self):
        if self._array is None:
            if not (self.path / "layout.json").exists():
                raise UserError(f"no activation matrix at {self.path}; run the record stage first")
            self._array = zarr.open_group(self.path / "data", mode="a")["m"]
        return self._array

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.layout["shape"])

    @property
    def n_blocks(self) -> int:
        lay = self.layout
        return -(-lay["shape"][0] // lay["rows_per_block"])

    def block_rows(self, block: int) -> tuple[int, int]:
        lay = self.layout
        start = block * lay["rows_per_block"]
        return start, min(start + lay["rows_per_block"], lay["shape"][0])

    # -- writing ------------------------------------------------------------------------------
    def _marker(self, block: int) -> Path:
        return self.path / "blocks" / f"{block:07d}.json"

    def block_done(self, block: int) -> bool:
        return self._marker(block).exists()

    def pending_blocks(self) -> list[int]:
        return [b for b in range(self.n_blocks) if not self.block_done(b)]

    def write_block(self, block: int, values: np.ndarray, info: dict | None = None) -> None:
        """Write row block ``block`` (all its rows, all columns), then mark it done.

        ``info`` (JSON-serialisable, e.g. example ids and outputs) is stored in the marker.
        """
        start, stop = self.block_rows(block)
        values = np.asarray(values)
        if values.shape != (stop - start, self.shape[1]):
            raise ValueError(f"block {block} of {self.path} needs shape {(stop - start, self.shape[1])}, "
                             f"got {values.shape}")
        try:
            self.array[start:stop, :] = values.astype(self.array.dtype, copy=False)
        except OSError as exc:
            raise UserError(_os_error_message(self.path, exc)) from exc
        atomic_write_json(self._marker(block), {"block": block, "rows": [start, stop], **(info or {})})

    def block_info(self, block: int) -> dict:
        return json.loads(self._marker(block).read_text())

    # -- reading ------------------------------------------------------------------------------
    def read(self, rows: slice | np.ndarray = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """Read ``[rows, cols]`` as stored (fp16 by default). A corrupted chunk is named."""
        if self.pending_blocks():
            raise UserError(f"store {self.path} is incomplete (blocks {self.pending_blocks()[:5]} "
                            "missing); rerun the record stage to finish it")
        try:
            if isinstance(rows, slice):
                return self.array[rows, cols]
            return self.array.get_orthogonal_selection((np.asarray(rows), cols))
        except ValueError as exc:
            if "checksum" in str(exc).lower():
                raise UserError(self._find_corrupt_chunk(cols)) from exc
            raise

    def _find_corrupt_chunk(self, cols: slice) -> str:
        rpb, cpc = self.array.chunks
        n_rows, n_cols = self.shape
        c0, c1, _ = cols.indices(n_cols)
        for r in range(0, n_rows, rpb):
            for c in range((c0 // cpc) * cpc, c1, cpc):
                try:
                    self.array[r:r + rpb, c:c + cpc]
                except ValueError:
                    chunk = self.path / "data" / "m" / "c" / str(r // rpb) / str(c // cpc)
                    return (f"corrupted chunk {chunk} (checksum mismatch); delete {self.path} and "
                            "rerun the record stage to rebuild it")
        return f"checksum mismatch in {self.path}; delete it and rerun the record stage"

    def iter_col_blocks(self, cols_per_read: int | None = None, rows=slice(None)
                        ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(col_start, block [n_rows, cols])`` over all columns, one chunk column at a time.

        Peak memory is one block, independent of the number of columns.
        """
        n_cols = self.shape[1]
        step = cols_per_read or self.layout["cols_per_chunk"]
        for c in range(0, n_cols, step):
            yield c, self.read(rows, slice(c, min(c + step, n_cols)))


def mark_complete(directory: Path, info: dict) -> None:
    """Mark a stage directory complete: the last write of a stage, atomic."""
    atomic_write_json(Path(directory) / COMPLETE, info)


def is_complete(directory: Path) -> bool:
    return (Path(directory) / COMPLETE).exists()
