import os

import numpy as np
import pytest

from engine.errors import UserError
from engine.files import atomic_write_json
from engine.pipeline.completion import is_complete, mark_complete
from engine.pipeline.store import MatrixStore


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


# -- store types and range ------------------------------------------------------------------------
def _bf16_values(rng, shape):
    """float32 values that are exactly bfloat16 values, incl. the extremes of its range."""
    import torch

    x = torch.from_numpy((rng.standard_normal(shape) * 10.0 ** rng.integers(-6, 6, shape)).astype(np.float32))
    x = x.to(torch.bfloat16).float().numpy()
    x.flat[:6] = [1e5, -3.3895314e38, 9.2e-41, -0.0, 65504.0, 70000.0]  # beyond fp16, a subnormal
    return np.asarray(torch.from_numpy(x).to(torch.bfloat16).float().numpy())


def test_bfloat16_store_round_trips_exactly_as_bit_patterns(tmp_path):
    import torch

    rng = np.random.default_rng(2)
    values = _bf16_values(rng, (10, 37))
    values[3] = np.nan  # a row whose step does not exist
    st = MatrixStore.create(tmp_path / "m", 10, 37, rows_per_block=4, cols_per_chunk=8, dtype="bfloat16")
    for b in range(st.n_blocks):
        s, e = st.block_rows(b)
        st.write_block(b, values[s:e])
    back = st.read()
    assert back.dtype == np.float32
    assert back.tobytes() == values.tobytes()  # bit for bit: NaN rows, -0.0, subnormals included
    assert np.signbit(back.flat[3]) and back.flat[0] > 65504 and back.flat[1] < -3e38
    tensor = st.read(tensor=True)
    assert tensor.dtype == torch.bfloat16
    assert torch.equal(tensor.float().nan_to_num(7.0), torch.from_numpy(values).nan_to_num(7.0))
    blocks = [blk for _, blk in st.iter_col_blocks(rows=np.array([0, 9]), tensor=True)]
    assert all(b.dtype == torch.bfloat16 for b in blocks)
    np.testing.assert_array_equal(torch.cat(blocks, 1).float().numpy(), values[[0, 9]])
    # self-describing on disk: zarr holds the raw bits, layout and attributes name the type
    assert st.layout["dtype"] == "bfloat16" and st.array.dtype == np.uint16
    assert st.array.attrs["dtype"] == "bfloat16"
    assert MatrixStore(tmp_path / "m").read().tobytes() == back.tobytes()


def test_bfloat16_store_rounds_like_torch():
    import torch

    from engine.pipeline.store import decode_values, encode_values

    x = np.random.default_rng(3).standard_normal(1000).astype(np.float32) * 1e3
    np.testing.assert_array_equal(decode_values(encode_values(x, "bfloat16"), "bfloat16"),
                                  torch.from_numpy(x).to(torch.bfloat16).float().numpy())


def test_unwritten_bfloat16_cells_read_as_nan(tmp_path):
    from engine.pipeline.store import decode_values

    st = MatrixStore.create(tmp_path / "m", 2, 3, rows_per_block=1, dtype="bfloat16")
    assert np.isnan(decode_values(st.array[:], "bfloat16")).all()


def test_activation_beyond_float16_fails_at_write_time_naming_the_cell(tmp_path):
    st = MatrixStore.create(tmp_path / "m", 4, 6, rows_per_block=2)
    values = np.zeros((2, 6), np.float32)
    values[1, 4] = 1e5
    with pytest.raises(UserError) as err:
        st.write_block(1, values, describe=lambda row, col: f"row {row} is component X{col}")
    msg = str(err.value)
    assert "\n" not in msg
    assert "row 3 is component X4" in msg and "100000" in msg and "record.store_dtype=bfloat16" in msg
    assert st.pending_blocks() == [0, 1]  # nothing marked done
    assert not list((tmp_path / "m" / "data" / "m").rglob("c/1/*"))  # and no chunk written
    # 65,504 is float16's largest value; -65,519 still rounds to it, -65,520 overflows
    values[1, 4] = -65519.0
    st.write_block(1, values)
    assert st.array[3, 4] == -65504.0
    values[1, 4] = -65520.0
    with pytest.raises(UserError, match="-65520"):
        st.write_block(1, values)


def test_bfloat16_stores_what_float16_cannot(tmp_path):
    values = np.zeros((2, 6), np.float32)
    values[1, 4] = 1e5
    st = MatrixStore.create(tmp_path / "m", 2, 6, rows_per_block=2, dtype="bfloat16")
    st.write_block(0, values)
    assert st.read()[1, 4] == np.float32(99840.0)  # 1e5 rounded to bfloat16's 8 bits, not inf
    exact = np.float32(98304.0)  # a bfloat16 value: stored exactly
    values[1, 4] = exact
    st.write_block(0, values)
    assert st.read()[1, 4] == exact


def test_infinite_activation_and_float32_overflow_are_refused(tmp_path):
    st = MatrixStore.create(tmp_path / "m", 2, 3, rows_per_block=2, dtype="bfloat16")
    with pytest.raises(UserError, match=r"is -inf before storing.*model\.dtype"):
        st.write_block(0, np.array([[0, 0, 0], [0, -np.inf, 0]], np.float32))
    with pytest.raises(UserError, match=r"does not fit the store's bfloat16.*record\.store_dtype=float32"):
        st.write_block(0, np.array([[0, 0, 0], [0, 3.4e38, 0]], np.float32))
    st32 = MatrixStore.create(tmp_path / "f", 2, 3, rows_per_block=2, dtype="float32")
    with pytest.raises(UserError, match="float32"):
        st32.write_block(0, np.array([[0, 0, 0], [0, 1e39, 0]], np.float64))
    st32.write_block(0, np.array([[0, 0, 0], [np.nan, 3.4e38, 0]], np.float64))  # NaN is allowed
    assert st32.read()[1, 1] == np.float32(3.4e38)


def test_unknown_store_dtype_is_refused(tmp_path):
    with pytest.raises(UserError, match="record.store_dtype"):
        MatrixStore.create(tmp_path / "m", 2, 3, rows_per_block=2, dtype="int8")


@pytest.mark.parametrize("setting, model, expected", [
    ("auto", "torch.bfloat16", "bfloat16"), ("auto", "bfloat16", "bfloat16"), ("auto", "torch.float16", "float16"),
    ("auto", "torch.float32", "float16"), ("float16", "torch.bfloat16", "float16"),
    ("float32", "torch.bfloat16", "float32"), ("bfloat16", "torch.float32", "bfloat16")])
def test_auto_store_dtype_keeps_the_models_16_bit_type(setting, model, expected):
    import torch

    from engine.pipeline.store import resolve_store_dtype

    assert resolve_store_dtype(setting, model) == expected
    if model.startswith("torch."):
        assert resolve_store_dtype(setting, getattr(torch, model.split(".")[1])) == expected


def test_ap_of_bfloat16_stored_data_equals_sklearn(tmp_path):
    """The rank stage's path (stored bf16 block -> counting sort) against scikit-learn."""
    import torch
    from sklearn.metrics import average_precision_score

    from engine.science.ranking import average_precision, on_device

    rng = np.random.default_rng(5)
    n, cols = 90, 40
    labels = np.arange(n) % 3
    # few distinct bf16 levels plus a label-dependent shift: many ties, signed zeros, large values
    raw = np.round(rng.standard_normal((n, cols)) * 3) * 2.0 ** rng.integers(-3, 18, cols) + labels[:, None]
    raw[rng.random((n, cols)) < 0.1] = -0.0
    st = MatrixStore.create(tmp_path / "m", n, cols, rows_per_block=32, cols_per_chunk=16, dtype="bfloat16")
    for b in range(st.n_blocks):
        s, e = st.block_rows(b)
        st.write_block(b, raw[s:e])
    values = st.read().astype(np.float64)
    ref = np.array([[average_precision_score(labels == lab, values[:, j]) for j in range(cols)] for lab in range(3)])
    got = np.concatenate([average_precision(on_device(blk, "cpu"), labels, n_labels=3)
                          for _, blk in st.iter_col_blocks(tensor=True)], axis=1)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert st.read(tensor=True).dtype == torch.bfloat16  # so the 16-bit counting sort ran
    np.testing.assert_allclose(average_precision(values, labels, n_labels=3), ref, rtol=0, atol=1e-12)


def test_profiles_store_the_models_own_16_bit_type_and_bad_settings_are_refused():
    from engine.pipeline.config import CHOICES, load_profile
    from engine.pipeline.store import STORE_DTYPES, resolve_store_dtype

    assert set(CHOICES["record.store_dtype"]) == {*STORE_DTYPES, "auto"}  # the setting offers what the store holds

    paper = load_profile("paper")
    assert resolve_store_dtype(paper["record"]["store_dtype"], paper["model"]["dtype"]) == "bfloat16"
    tiny = load_profile("tiny")
    assert resolve_store_dtype(tiny["record"]["store_dtype"], tiny["model"]["dtype"]) == "float16"
    with pytest.raises(UserError, match=r"record.store_dtype=.int8. is invalid: use one of float16, bfloat16, float32, auto"):
        load_profile("tiny", ["record.store_dtype=int8"])
