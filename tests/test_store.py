import os

import numpy as np
import pytest

from engine.errors import UserError
from engine.store import MatrixStore, atomic_write_json, is_complete, mark_complete


def _fill(store, rng):
    full = rng.standard_normal(store.shape).astype(np.float16)
    for b in range(store.n_blocks):
        s, e = store.block_rows(b)
        store.write_block(b, full[s:e], {"ids": list(range(s, e))})
    return full


def test_roundtrip_blocks_and_column_reads(tmp_path):
    rng = np.random.default_rng(0)
    st = MatrixStore.create(tmp_path / "m", 10, 37, rows_per_block=4, cols_per_chunk=8)
    assert st.n_blocks == 3 and st.pending_blocks() == [0, 1, 2]
    full = _fill(st, rng)
    assert st.pending_blocks() == []
    np.testing.assert_array_equal(st.read(), full)
    cols = [(c, blk) for c, blk in st.iter_col_blocks()]
    assert [c for c, _ in cols] == [0, 8, 16, 24, 32]
    np.testing.assert_array_equal(np.concatenate([b for _, b in cols], axis=1), full)
    np.testing.assert_array_equal(st.read(np.array([1, 7, 9]), slice(3, 11)), full[[1, 7, 9], 3:11])
    assert st.block_info(2)["ids"] == [8, 9]


def test_reopen_same_layout_resumes_and_other_layout_refused(tmp_path):
    st = MatrixStore.create(tmp_path / "m", 6, 5, rows_per_block=2)
    st.write_block(0, np.ones((2, 5)))
    again = MatrixStore.create(tmp_path / "m", 6, 5, rows_per_block=2)
    assert again.pending_blocks() == [1, 2]
    with pytest.raises(UserError, match="layout"):
        MatrixStore.create(tmp_path / "m", 6, 5, rows_per_block=3)


def test_incomplete_store_is_not_read(tmp_path):
    st = MatrixStore.create(tmp_path / "m", 4, 3, rows_per_block=2)
    st.write_block(0, np.zeros((2, 3)))
    with pytest.raises(UserError, match="incomplete"):
        st.read()


def test_corrupted_chunk_is_detected_and_named(tmp_path):
    st = MatrixStore.create(tmp_path / "m", 8, 16, rows_per_block=4, cols_per_chunk=8)
    _fill(st, np.random.default_rng(1))
    chunk = tmp_path / "m" / "data" / "m" / "c" / "1" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    fresh = MatrixStore(tmp_path / "m")
    with pytest.raises(UserError, match=r"corrupted chunk .*c/1/0"):
        fresh.read()


def test_wrong_block_shape_is_rejected(tmp_path):
    st = MatrixStore.create(tmp_path / "m", 4, 3, rows_per_block=2)
    with pytest.raises(ValueError, match="block 1"):
        st.write_block(1, np.zeros((3, 3)))


def test_unwritable_output_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # works as root too, unlike chmod
    with pytest.raises(UserError, match="cannot write"):
        atomic_write_json(blocker / "x.json", {})


def test_disk_full_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError, match="disk full"):
        atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []
    assert not is_complete(tmp_path)
    monkeypatch.undo()
    mark_complete(tmp_path, {"ok": True})
    assert is_complete(tmp_path)


def _create_same(path):
    MatrixStore.create(path, 64, 300, rows_per_block=8, cols_per_chunk=100)
    return True


def test_processes_creating_one_store_at_once_all_get_it(tmp_path):
    # torchrun shards open the same matrices together: zarr alone raised ContainsGroupError
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(4) as pool:
        assert pool.map(_create_same, [tmp_path / "m"] * 8) == [True] * 8
    assert MatrixStore(tmp_path / "m").shape == (64, 300)
