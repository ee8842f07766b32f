"""On-disk activation store: chunked, compressed, checksummed matrices ``[examples, neurons]``.

Zarr v3 is the container: it gives chunked partial reads (ranking reads neuron blocks, so RAM
does not grow with the number of neurons), zstd compression, a CRC32C checksum on every chunk
(a corrupted chunk is detected on read), and atomic chunk writes on a local file system
(a killed writer never leaves a half-written chunk under its final name).

Values are stored in one of ``STORE_DTYPES``. zarr has no bfloat16, so a bfloat16 matrix is
kept as its raw 16-bit patterns (zarr ``uint16``) with ``"dtype": "bfloat16"`` in ``layout.json``
and in the array's attributes; reads give the values back exactly. Every write is range-checked:
a value the store's type cannot hold is a ``UserError`` at write time, never a silent ``inf``.

Completion is tracked outside zarr: a row block is done only when its marker file exists,
written atomically *after* its chunks, and parses as that block's marker. A resumed writer
rewrites every block without a (whole) marker, so nothing half-written is ever reused. Row blocks
are whole chunks, so no chunk is ever read-modified-written and two processes writing disjoint
blocks never touch the same file. A chunk found corrupted on read invalidates its row block (the
marker is removed), so a rerun of the record stage re-records exactly that block.
"""
from __future__ import annotations

import fcntl
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import zarr

from engine.errors import UserError
from engine.files import Damaged, atomic_write_json, note, os_error_message, read_json

STORE_DTYPES = ("float16", "bfloat16", "float32")
COLS_PER_CHUNK = 8192  # columns per stored chunk: the unit later stages read and rank
_BF16_NAN = 0x7FC0  # the canonical quiet NaN of bfloat16: the fill value of unwritten cells


def resolve_store_dtype(setting: str, model_dtype) -> str:
    """The store type for ``record.store_dtype=setting`` and a model computing in ``model_dtype``.

    ``"auto"`` keeps the model's own 16-bit type, so its activations are stored as they were
    computed: ``bfloat16`` for a bf16 model, ``float16`` for an fp16 model. A model computing in
    fp32 (or wider) has no 16-bit type of its own; it gets ``float16``, which holds 3 more
    mantissa bits than bfloat16 (fewer artificial ties in AP) at half the bytes of float32, and
    whose narrower range (±65,504) is checked on every write. Any other setting is returned as
    it is; ``model_dtype`` is a ``torch.dtype`` or its name ("bfloat16", "float32", ...).
    """
    if setting != "auto":
        if setting not in STORE_DTYPES:
            raise UserError(f"record.store_dtype '{setting}' is not one of auto, {', '.join(STORE_DTYPES)}")
        return setting
    name = str(model_dtype).removeprefix("torch.")
    return "bfloat16" if name in ("bfloat16", "bf16") else "float16"


def encode_values(values: np.ndarray, dtype: str) -> np.ndarray:
    """``values`` as the store holds them: float16/float32 arrays, or bfloat16 bit patterns.

    Rounds to nearest even (numpy's cast for float16/float32, torch's for bfloat16). NaN stays
    NaN (in bfloat16 always the quiet NaN 0x7FC0). Overflow becomes ±inf here; ``write_block``
    refuses it (see ``first_unrepresentable``). Returns float16 / float32, or uint16 for ``dtype="bfloat16"``.
    """
    if dtype == "bfloat16":
        import torch

        bits = torch.from_numpy(np.ascontiguousarray(values)).to(torch.bfloat16).view(torch.int16)
        bits = bits.numpy().view(np.uint16)
        bits[np.isnan(values)] = _BF16_NAN  # one NaN pattern, the fill value's (torch gives 0x7FFF)
        return bits
    return np.asarray(values).astype(dtype, copy=False)


def decode_values(stored: np.ndarray, dtype: str) -> np.ndarray:
    """Stored cells as numpy values, exactly: float16/float32 as they are, bfloat16 widened to
    float32 (every bfloat16 value is a float32 value: its upper 16 bits)."""
    if dtype == "bfloat16":
        return (np.asarray(stored, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    return stored


def decode_tensor(stored: np.ndarray, dtype: str):
    """Stored cells as a CPU ``torch`` tensor of the stored type itself (bfloat16 included), so
    16-bit data reaches ``ranking.average_precision``'s counting sort; no copy for bfloat16."""
    import torch

    stored = np.ascontiguousarray(stored)
    if dtype == "bfloat16":
        return torch.from_numpy(stored.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(stored)


def first_unrepresentable(values: np.ndarray, stored: np.ndarray, dtype: str) -> tuple[int, ...] | None:
    """Index of the first cell (row-major) whose value the store cannot hold, else ``None``.

    Such a cell is ±inf in ``values`` (the model's output was already infinite) or finite in
    ``values`` but not after encoding (beyond the type's range, e.g. |x| > 65,504 for float16).
    NaN in ``values`` is allowed: it marks rows whose decoding step does not exist.
    """
    as_stored = decode_values(stored, dtype)
    bad = np.isinf(values) | (np.isfinite(values) & ~np.isfinite(as_stored))
    if not bad.any():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), bad.shape))


class MatrixStore:
    """One activation matrix ``[n_rows, n_cols]`` on disk, written in row blocks.

    Parameters
    ----------
    path : directory of this matrix (a zarr array plus ``blocks/`` markers).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._array = None
        self._layout = None
        self._done: set[int] = set()  # blocks whose marker was read whole by this instance

    # -- creation -----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, n_rows: int, n_cols: int, *, rows_per_block: int,
               cols_per_chunk: int = COLS_PER_CHUNK, dtype: str = "float16", attrs: dict | None = None
               ) -> "MatrixStore":
        """Create the matrix, or reopen it if one with the same layout exists (resume).

        ``dtype``: one of ``STORE_DTYPES``; unwritten cells read as NaN. A matrix of another
        shape, dtype or block size at ``path`` is a stale artifact from other settings:
        UserError, never silently reused.
        """
        path = Path(path)
        if str(dtype) not in STORE_DTYPES:
            raise UserError(f"store dtype '{dtype}' for {path} is not one of {', '.join(STORE_DTYPES)}; "
                            "set record.store_dtype accordingly")
        layout = {"shape": [int(n_rows), int(n_cols)], "rows_per_block": int(rows_per_block),
                  "cols_per_chunk": int(cols_per_chunk), "dtype": str(dtype)}
        if n_rows < 0 or n_cols <= 0 or rows_per_block <= 0:
            raise UserError(f"bad matrix layout {layout} for {path}")
        layout_file = path / "layout.json"
        try:
            path.mkdir(parents=True, exist_ok=True)
            # torchrun shards create the same matrices at once: one creates, the others reopen
            with open(path / ".create.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if layout_file.exists():
                    try:
                        old = read_json(layout_file, "matrix layout")
                    except Damaged as exc:
                        note(f"{exc}; recording the matrix {path} again")
                        old = None
                    if old == layout:
                        return cls(path)
                    if old is not None:
                        raise UserError(f"store {path} holds a matrix with layout {old}, not {layout}; "
                                        "delete it or use another output directory")
                # markers without a layout belong to a matrix that is being replaced: never reuse them
                shutil.rmtree(path / "blocks", ignore_errors=True)
                group = zarr.open_group(path / "data", mode="a")
                bf16 = layout["dtype"] == "bfloat16"
                group.create_array(
                    "m", shape=(n_rows, n_cols), dtype="uint16" if bf16 else layout["dtype"],
                    chunks=(max(1, min(rows_per_block, max(n_rows, 1))), min(cols_per_chunk, n_cols)),
                    compressors=[zarr.codecs.ZstdCodec(level=3), zarr.codecs.Crc32cCodec()],
                    fill_value=_BF16_NAN if bf16 else np.nan, overwrite=True,
                    attributes={**(attrs or {}), "dtype": layout["dtype"],
                                **({"encoding": "bfloat16 bit patterns in uint16"} if bf16 else {})})
                atomic_write_json(layout_file, layout)
        except OSError as exc:
            raise UserError(os_error_message(path, exc)) from exc
        return cls(path)

    @property
    def layout(self) -> dict:
        if self._layout is None:
            if not (self.path / "layout.json").exists():
                raise UserError(f"no activation matrix at {self.path}; run the record stage first")
            try:
                self._layout = read_json(self.path / "layout.json", "matrix layout")
            except Damaged as exc:
                raise UserError(f"{exc}; rerun the record stage to record the matrix again") from None
        return self._layout

    @property
    def array(self):
        if self._array is None:
            if not (self.path / "layout.json").exists():
                raise UserError(f"no activation matrix at {self.path}; run the record stage first")
            self._array = zarr.open_group(self.path / "data", mode="a")["m"]
        return self._array

    @property
    def dtype(self) -> str:
        """The stored type, one of ``STORE_DTYPES``."""
        return self.layout["dtype"]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.layout["shape"])

    @property
    def n_blocks(self) -> int:
        lay = self.layout
        return -(-lay["shape"][0] // lay["rows_per_block"])

    @property
    def n_col_chunks(self) -> int:
        """Stored column chunks: the unit later stages read, rank and share out across ranks."""
        lay = self.layout
        return -(-lay["shape"][1] // lay["cols_per_chunk"])

    def col_chunk(self, chunk: int) -> slice:
        """The columns of column chunk ``chunk``."""
        cpc, n_cols = self.layout["cols_per_chunk"], self.layout["shape"][1]
        return slice(chunk * cpc, min((chunk + 1) * cpc, n_cols))

    def block_rows(self, block: int) -> tuple[int, int]:
        lay = self.layout
        start = block * lay["rows_per_block"]
        return start, min(start + lay["rows_per_block"], lay["shape"][0])

    # -- writing ------------------------------------------------------------------------------
    def _marker(self, block: int) -> Path:
        return self.path / "blocks" / f"{block:07d}.json"

    def block_done(self, block: int) -> bool:
        """Whether row block ``block`` is recorded: its marker exists and is that block's marker.

        A damaged marker is removed, with one line naming it, so the block is recorded again.
        """
        if block in self._done:
            return True
        marker = self._marker(block)
        if not marker.exists():
            return False
        try:
            self._read_marker(block)
        except Damaged as exc:
            note(f"{exc}; row block {block} of {self.path} will be recorded again")
            marker.unlink(missing_ok=True)
            return False
        self._done.add(block)
        return True

    def _read_marker(self, block: int) -> dict:
        info = read_json(self._marker(block), "row block marker")
        if not isinstance(info, dict) or info.get("block") != block or info.get("rows") != list(self.block_rows(block)):
            raise Damaged(self._marker(block), f"is not the marker of row block {block}")
        return info

    def invalidate_block(self, block: int) -> None:
        """Forget row block ``block``: remove its marker so the next record run records it again."""
        self._done.discard(block)
        self._marker(block).unlink(missing_ok=True)

    def pending_blocks(self) -> list[int]:
        return [b for b in range(self.n_blocks) if not self.block_done(b)]

    def write_block(self, block: int, values: np.ndarray, info: dict | None = None, *,
                    describe=None) -> None:
        """Write row block ``block`` (all its rows, all columns), then mark it done.

        ``info`` (JSON-serialisable, e.g. example ids and outputs) is stored in the marker.
        A value the store's type cannot hold (see ``first_unrepresentable``) raises
        ``UserError`` before anything of the block is written; ``describe(row, col) -> str``
        (store row and column) names the cell in that message, e.g. its model component.
        """
        start, stop = self.block_rows(block)
        values = np.asarray(values)
        if values.shape != (stop - start, self.shape[1]):
            raise ValueError(f"block {block} of {self.path} needs shape {(stop - start, self.shape[1])}, "
                             f"got {values.shape}")
        dtype = self.dtype
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, by name
            stored = encode_values(values, dtype)
        bad = first_unrepresentable(values, stored, dtype)
        if bad is not None:
            raise UserError(_range_message(self.path, dtype, start + bad[0], bad[1], values[bad], describe))
        try:
            self.array[start:stop, :] = stored
        except OSError as exc:
            raise UserError(os_error_message(self.path, exc)) from exc
        atomic_write_json(self._marker(block), {"block": block, "rows": [start, stop], **(info or {})})
        self._done.add(block)

    def block_info(self, block: int) -> dict:
        """The ``info`` stored with row block ``block``; UserError naming the marker if it is damaged."""
        try:
            return self._read_marker(block)
        except Damaged as exc:
            raise UserError(f"{exc}; rerun the record stage to record that block again") from None

    # -- reading ------------------------------------------------------------------------------
    def read(self, rows: slice | np.ndarray = slice(None), cols: slice = slice(None), *,
             tensor: bool = False):
        """Read ``[rows, cols]`` exactly as stored. A corrupted chunk is named.

        Returns a numpy array (float16 or float32; a bfloat16 store widened to float32, which
        is exact), or with ``tensor=True`` a CPU torch tensor of the stored type itself.
        """
        if self.pending_blocks():
            raise UserError(f"store {self.path} is incomplete (blocks {self.pending_blocks()[:5]} "
                            "missing); rerun the record stage to finish it")
        try:
            if isinstance(rows, slice):
                stored = self.array[rows, cols]
            else:
                stored = self.array.get_orthogonal_selection((np.asarray(rows), cols))
        except (ValueError, RuntimeError) as exc:  # a damaged chunk fails its CRC32C or its decoding
            corrupt = self._corrupt_chunks(cols)
            if not corrupt:
                raise
            raise UserError(self._invalidate_corrupt(corrupt)) from exc
        return decode_tensor(stored, self.dtype) if tensor else decode_values(stored, self.dtype)

    def _corrupt_chunks(self, cols: slice) -> list[tuple[int, Path]]:
        """``(row block, chunk file)`` of every chunk in ``cols`` that fails to decode."""
        rpb, cpc = self.array.chunks
        n_rows, n_cols = self.shape
        c0, c1, _ = cols.indices(n_cols)
        corrupt = []
        for r in range(0, n_rows, rpb):
            for c in range((c0 // cpc) * cpc, c1, cpc):
                try:
                    self.array[r:r + rpb, c:c + cpc]
                except (ValueError, RuntimeError):
                    chunk = self.path / "data" / "m" / "c" / str(r // rpb) / str(c // cpc)
                    corrupt.append((r // self.layout["rows_per_block"], chunk))
        return corrupt

    def _invalidate_corrupt(self, corrupt: list[tuple[int, Path]]) -> str:
        blocks = sorted({b for b, _ in corrupt})
        for b in blocks:
            self.invalidate_block(b)
        more = f" and {len(corrupt) - 1} more" if len(corrupt) > 1 else ""
        return (f"corrupted chunk {corrupt[0][1]}{more} (checksum mismatch); row block(s) {blocks} of "
                f"{self.path} invalidated: rerun to record them again")

    def iter_col_blocks(self, cols_per_read: int | None = None, rows=slice(None), *, tensor: bool = False
                        ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(col_start, block [n_rows, cols])`` over all columns, one chunk column at a time.

        Blocks are what ``read(rows, cols, tensor=tensor)`` gives. Peak memory is one block,
        independent of the number of columns.
        """
        n_cols = self.shape[1]
        step = cols_per_read or self.layout["cols_per_chunk"]
        for c in range(0, n_cols, step):
            yield c, self.read(rows, slice(c, min(c + step, n_cols)), tensor=tensor)


def _range_message(path: Path, dtype: str, row: int, col: int, value: float, describe) -> str:
    where = describe(row, col) if describe is not None else f"{path} row {row}, column {col}"
    if not np.isfinite(value):
        return (f"{where}: the recorded activation is {value} before storing; the model itself "
                "overflows, run it in a wider type (model.dtype=float32)")
    wider = "bfloat16 (or float32)" if dtype == "float16" else "float32"
    return (f"{where}: activation {float(value):.7g} does not fit the store's {dtype} (it would become "
            f"inf); set record.store_dtype={wider}")


def is_chunk_file(rel: str) -> bool:
    """Whether the relative path ``rel`` is a chunk file of a MatrixStore (``…/data/m/c/<r>/<c>``):
    zarr checks their CRC32C on every read."""
    parts = rel.split("/")
    return len(parts) >= 5 and parts[-5:-2] == ["data", "m", "c"]
