"""Average precision of every neuron for every language, exact and fast; top-k / bottom-k.

``average_precision`` reproduces ``sklearn.metrics.average_precision_score`` (one-vs-rest,
label ``l`` positive) for every (language, neuron) pair, ties included, from **one sort per
neuron** shared by all languages. Neurons are processed in chunks, so peak memory is set by
``memory_budget_mb``, not by the size of the matrix.

How it stays exact. scikit-learn puts one threshold at each distinct score value (tied scores
form one threshold) and computes ``AP = sum_g (R_g - R_{g-1}) P_g`` over thresholds ``g`` in
decreasing order. With ``TP_g`` the positives scoring ``>= threshold g`` and ``N_g`` all
examples scoring ``>= threshold g``, that is ``sum_g (TP_g - TP_{g-1}) * TP_g / N_g / P``, i.e.
each positive example of label l contributes ``TP_l(g) / N_g`` at its own threshold ``g``.
The running count of every label *and* of all examples lives in one int64, as bit fields
(``bits(max positives)`` per label, ``bits(n)`` on top; more words only if they do not fit),
so one integer cumulative sum per neuron serves all L languages. Integer counts are exact;
the only rounding is one float64 division per example and the float64 sum (differences from
scikit-learn are ~1e-16, far below 1e-12).

How each neuron's examples are ordered (both tested against scikit-learn and each other):

- fp16 / bf16 scores (``method="auto"``): the value's 16 bits map to an order-preserving
  16-bit key (-0.0 and +0.0 share one key). On CPU the compiled kernels of
  ``engine.science.ap_kernels`` radix-sort each neuron's keys (two byte passes, O(n)) and walk the
  sorted examples once, in cache (bit-identical to the numpy pipeline below, which remains for
  more than 256 labels and for resamples of more than 65,536 rows); on CUDA a stable
  ``torch.sort`` of the keys. Cost per neuron is proportional to the number of examples.
- other dtypes (or ``method="sort"``): a stable ``torch.sort`` descending of the values.

Both give, per row, the descending order and for every sorted position the position of the
last element of its run of equal values (its threshold end); each element reads the running
counts there.

**Resamples without re-sorting** (``resampled_average_precision``). A bootstrap resample
reorders nothing: it gives each example a multiplicity (0, 1, 2, ...). AP on the resampled
rows equals AP with those multiplicities as integer weights over the same order (duplicated
rows have equal scores, so they fall in one threshold), so each neuron is sorted once and
every resample only costs weighted running counts over that order.

**Ties at the top-k cut and the secondary key.** A perfect separator has AP = 1.0, and at a
step where inputs differ only by the language tag many neurons are perfect separators, so the
top-k cut can fall inside a group of equal AP. Ordering that group by flat index would fill
top-k with the first components of the first layer. Instead ``top_k`` / ``bottom_k`` order
by AP first and, among equal AP, by a second measure of how well the neuron separates the
language: the **point-biserial correlation** ``r`` between the activation and the one-vs-rest
label (Pearson's r with the 0/1 label), computed in the same pass as AP
(``average_precision(..., return_separation=True)``, ``point_biserial``). It is bounded in
[-1, 1], continuous (it grows with the gap between the language's activations and the rest
relative to their spread, where AP saturates at 1 for every perfect separator), and 0 for a
constant neuron. Top-k prefers higher r, bottom-k lower r; the last fallback is the lower flat
index, so the order is total and deterministic. ``cut_ties`` reports the size of the tie
group at a cut, so a reader can see when the secondary key decided it.

Neurons are processed in chunks (peak memory follows the chunk, not the matrix); on CPU chunks
run in parallel threads with one intra-op thread each, because several steps (cumulative sums,
scatter_add) are serial inside torch. Figures: ``python -m engine bench ap``.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from engine.errors import UserError
from engine.science import ap_kernels

__all__ = ["average_precision", "resampled_average_precision", "point_biserial", "top_k",
           "bottom_k", "cut_ties"]

# Working bytes per (example, neuron) element of a chunk, counted from the live tensors of
# _ordered_sums: keys and order (10-16), label codes (8), group ends (8), packed increments,
# counts and gathered counts (24), float64 numerators/contributions (16), the float64 copy for
# the point-biserial statistic (16), with slack for the allocator.
_BYTES_PER_ELEMENT = 112
# Working bytes per (neuron, resample, label) of a resampled chunk: the AP sums, the weighted
# moments of r and their temporaries (float64), the chunk's slice of the outputs.
_BYTES_PER_RESAMPLE_LABEL = 96
# About 2**18 elements per chunk keeps the working set in cache (measured faster than bigger
# chunks); the memory budget can only make chunks smaller.
_CHUNK_ELEMENTS = 2**18
# The compiled path reads each row's slice of a chunk contiguously: wider slices make fewer
# scattered reads (measured: 52 columns 4.4 ns per element for the key pass, 128 columns 2.2).
_MIN_COMPILED_CHUNK = 128
# Largest magnitude bits of a finite value (sign bit cleared): fp16's exponent is 5 bits,
# bf16's 8; at and above these the value is inf or NaN.
_NONFINITE_MAG = {torch.float16: 0x7C00, torch.bfloat16: 0x7F80}
# The compiled CPU path (engine.science.ap_kernels) for fp16/bf16; tests switch it off to check the
# numpy path it replaced against it.
_COMPILED = True


def _compiled_inputs(x: torch.Tensor, lab: torch.Tensor, n_labels: int, max_examples: int | None = None):
    """``(bits, labels)`` for ``ap_kernels`` when its path applies, else ``(None, None)``: the
    uint16 bit patterns of ``x`` and the labels as uint8."""
    if not (_COMPILED and x.device.type == "cpu" and x.dtype in _NONFINITE_MAG
            and n_labels <= ap_kernels.MAX_LABELS
            and (max_examples is None or x.shape[0] <= max_examples)):
        return None, None
    if x.stride(1) != 1:  # the kernels read rows; a transposed view is copied once
        x = x.contiguous()
    return x.view(torch.int16).numpy().view(np.uint16), lab.numpy().astype(np.uint8)


def _as_tensor(array, name: str) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach()
    if isinstance(array, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(array))
    try:
        return torch.as_tensor(np.asarray(array))
    except (TypeError, ValueError) as exc:
        raise UserError(f"{name} must be a numpy array or a torch tensor ({exc})") from exc


def _sort_dtype(dtype: torch.dtype) -> torch.dtype:
    # fp16/bf16/fp32 -> fp32 is exact, so ties and order are those scikit-learn sees after its
    # own cast to float64; float64 input must stay float64 (casting down would create ties).
    if dtype == torch.float64:
        return torch.float64
    if dtype in (torch.float16, torch.bfloat16, torch.float32):
        return torch.float32
    if dtype in (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool):
        return torch.float64
    raise UserError(f"scores have dtype {dtype}; use a float (fp16, bf16, fp32, fp64) array")


def _validate_labels(labels, n_examples: int, n_labels: int | None, device,
                     require_all: bool = True) -> tuple[torch.Tensor, int]:
    lab = _as_tensor(labels, "labels")
    if lab.ndim != 1 or lab.shape[0] != n_examples:
        raise UserError(
            f"labels must have shape [n_examples]=[{n_examples}], got {tuple(lab.shape)}")
    if lab.is_floating_point() or lab.is_complex():
        if not torch.equal(lab, lab.round()):
            raise UserError("labels must be integers 0..L-1 (language indices), got non-integers")
    lab = lab.to(device=device, dtype=torch.int64)
    if n_examples and int(lab.min()) < 0:
        raise UserError("labels must be integers 0..L-1 (language indices), got a negative label")
    observed = int(lab.max()) + 1 if n_examples else 0
    if n_labels is None:
        n_labels = observed
    elif observed > n_labels:
        raise UserError(f"labels go up to {observed - 1} but n_labels={n_labels}; pass a larger n_labels")
    if n_labels < 1:
        raise UserError("need at least one label")
    counts = torch.bincount(lab, minlength=n_labels)
    missing = torch.nonzero(counts == 0).flatten().tolist()
    if missing and require_all:
        raise UserError(
            f"label(s) {missing} have no positive example, so their average precision is undefined; "
            "drop those languages or add examples")
    return lab, n_labels


def _packing(lab: torch.Tensor, n_labels: int, max_positives: int, max_total: int):
    """Bit-field layout of the running counts: one field per label, the total on top.

    Returns ``(bits, top_shift, code, units, label_bins)``: ``code[i]`` = 64 * word + field
    shift of example i's label (also its accumulation bin), ``units[w][i]`` = what one copy of
    example i adds to word w's running counts, ``label_bins[l]`` = bin of label l.
    """
    device = lab.device
    bits = max(1, int(max_positives).bit_length())
    total_bits = max(1, int(max_total).bit_length())
    per_word = (63 - total_bits) // bits
    if per_word < 1:
        raise UserError(f"{max_total} examples are too many for packed counts")
    n_words = math.ceil(n_labels / per_word)
    top_shift = 63 - total_bits
    word = lab // per_word
    shift = (lab % per_word) * bits
    code = word * 64 + shift
    units = [torch.where(word == w, torch.ones_like(shift) << shift, torch.zeros_like(shift))
             | (1 << top_shift) for w in range(n_words)]
    labels = torch.arange(n_labels, device=device)
    label_bins = (labels // per_word) * 64 + (labels % per_word) * bits
    if device.type == "cpu":  # the CPU path runs in numpy (its gathers are several times faster)
        code, units = code.numpy(), [u.numpy() for u in units]
    return bits, top_shift, code, units, label_bins


def _chunk_size(chunk_size, n: int, memory_budget_mb: float, in_flight: int, per_example: int = 1) -> int:
    budget_elements = int(memory_budget_mb * 2**20 // _BYTES_PER_ELEMENT) // max(1, in_flight)
    if chunk_size is None:
        chunk_size = max(1, min(budget_elements, _CHUNK_ELEMENTS) // (n * per_example))
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise UserError(f"chunk_size must be >= 1, got {chunk_size}")
    return chunk_size


def _check_scores(scores) -> torch.Tensor:
    x = _as_tensor(scores, "scores")
    if x.ndim != 2:
        raise UserError(f"scores must be 2-D [n_examples, n_neurons], got shape {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise UserError("scores has no examples (n_examples = 0)")
    _sort_dtype(x.dtype)
    return x


def _nonfinite_error() -> UserError:
    return UserError("scores contain NaN or infinite values; remove or fill them before ranking")


def _descending_keys(bits: np.ndarray) -> np.ndarray:
    """uint16 keys of fp16/bf16 bit patterns whose ascending order is the values' descending one.

    ``0x7FFF - m`` for a value >= 0 and ``0x7FFF + m`` for a value < 0, with ``m`` the bits
    without the sign (monotone in the magnitude for both formats), so -0.0 and +0.0 share a key.
    Branch-free: ``0x7FFF - m + 2 * sign * m``.
    """
    magnitude = bits & np.uint16(0x7FFF)
    sign = bits >> np.uint16(15)
    return np.uint16(0x7FFF) - magnitude + ((magnitude * sign) << np.uint16(1))


def _columns(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Columns ``start:stop`` of ``x`` [n, N] as a contiguous block [c, n]. Copying the slab
    first and transposing it in cache is ~4x faster than one strided transposing copy."""
    return x[:, start:stop].contiguous().t().contiguous()


def _order_columns(x: torch.Tensor, start: int, stop: int, radix: bool, sort_dtype: torch.dtype):
    """Columns ``start:stop`` of ``x`` [n, N] as a block [c, n] and its ``_order_chunk``: ordering
    along the last dim of a contiguous block is the fastest layout. The radix path keeps the
    16-bit values; the other casts to ``sort_dtype`` in the same pass as the transpose."""
    if radix:
        block = _columns(x, start, stop)
    else:
        block = torch.empty((stop - start, x.shape[0]), dtype=sort_dtype, device=x.device)
        block.copy_(x[:, start:stop].t())
    return block, _order_chunk(block, radix)


def _order_chunk(block: torch.Tensor, radix: bool):
    """Descending order of each row of ``block [c, n]`` and the threshold end of every position.

    Returns ``(order, end)``: ``order`` int64 ``[c, n]`` (``block[i, order[i, p]]`` is
    non-increasing in p) and ``end`` int64 ``[c, n]``: for sorted position ``(i, p)`` the flat
    index ``i * n + q`` of the last sorted position q of row i holding the same value (tied
    values form one threshold), or ``None`` when no row of the chunk has a tie. numpy arrays for
    a CPU block, tensors on the block's device otherwise.
    ``radix``: ``block`` holds fp16/bf16 values, ordered by their order-preserving 16-bit keys
    (on CPU numpy's stable sort of 16-bit integers, a radix sort, O(n) per row); otherwise by a
    stable comparison sort of the float values. NaN/inf raise ``UserError``.
    """
    c, n = block.shape
    device = block.device
    if device.type == "cpu":
        if radix:
            bits = block.contiguous().view(torch.int16).numpy().view(np.uint16)
            if c and n and int((bits & np.uint16(0x7FFF)).max()) >= _NONFINITE_MAG[block.dtype]:
                raise _nonfinite_error()
            key = _descending_keys(bits)
            order = np.argsort(key, axis=1, kind="stable")
            sorted_key = np.take(key, order + (np.arange(c) * n)[:, None])
        else:
            # Stable sort is the fastest CPU comparison sort here; the order inside a tie does
            # not matter because a tie is one threshold.
            values, order_t = torch.sort(block, dim=1, descending=True, stable=True)
            sorted_key, order = values.numpy(), order_t.numpy()
            # Descending sort puts NaN first; the extremes tell whether every value is finite.
            if c and not (np.isfinite(sorted_key[:, 0]).all() and np.isfinite(sorted_key[:, -1]).all()):
                raise _nonfinite_error()
        is_end = np.empty((c, n), dtype=bool)
        is_end[:, -1] = True
        np.not_equal(sorted_key[:, :-1], sorted_key[:, 1:], out=is_end[:, :-1])
        if is_end.all():  # no ties in the chunk: every element is its own threshold
            return order, None
        # Rows close with an end, so counting ends over the flattened chunk numbers the groups
        # globally; a position's group is the number of ends before it.
        flat = is_end.reshape(-1)
        group = np.empty(c * n, dtype=np.int64)
        group[0] = 0
        np.cumsum(flat[:-1], out=group[1:])
        return order, np.take(np.flatnonzero(flat), group).reshape(c, n)
    if radix:
        bits = block.contiguous().view(torch.int16).to(torch.int32)
        magnitude = bits & 0x7FFF
        if c and n and int(magnitude.max()) >= _NONFINITE_MAG[block.dtype]:
            raise _nonfinite_error()
        sorted_key, order = torch.sort(torch.where(bits < 0, 0x7FFF + magnitude, 0x7FFF - magnitude),
                                       dim=1, stable=True)
    else:
        sorted_key, order = torch.sort(block, dim=1, descending=True, stable=True)
        if not (bool(torch.isfinite(sorted_key[:, 0]).all()) and bool(torch.isfinite(sorted_key[:, -1]).all())):
            raise _nonfinite_error()
    is_end = torch.ones((c, n), dtype=torch.bool, device=device)
    torch.ne(sorted_key[:, :-1], sorted_key[:, 1:], out=is_end[:, :-1])
    if bool(is_end.all()):
        return order, None
    # the nearest end at or after each position: a reverse running minimum of end positions
    ends = torch.where(is_end, torch.arange(n, device=device), n)
    ends = torch.flip(torch.cummin(torch.flip(ends, (1,)), dim=1).values, (1,))
    return order, ends + torch.arange(c, device=device)[:, None] * n


def _ordered_sums(order, end, packing, n_bins: int, weights=None):
    """Per (neuron, label bin) sums of ``w * TP_l(g) / N_g`` over one chunk's sorted examples.

    ``order``/``end``: from ``_order_chunk`` (numpy on CPU, tensors elsewhere). ``weights``:
    None (every example once) or the int multiplicities ``[n]`` of one resample. Every example
    contributes its weight times the precision at its threshold end, where ``TP_l`` and ``N``
    are (weighted) running counts, exact integers packed as in ``_packing``. Returns float64
    ``[c, n_bins]`` (numpy or tensor like ``order``); each row is summed serially in sorted
    order, so the result does not depend on the chunking.
    """
    bits, top_shift, code, units, _ = packing
    c, n = order.shape
    field_mask = (1 << bits) - 1
    single_word = len(units) == 1
    if isinstance(order, np.ndarray):
        sorted_code = np.take(code, order)  # [c, n]
        shift = sorted_code if single_word else sorted_code & 63
        sorted_w = None if weights is None else np.take(weights, order)
        sums = torch.zeros((c, n_bins), dtype=torch.float64)
        for w, unit in enumerate(units):
            counts = np.take(unit, order)
            if sorted_w is not None:
                counts *= sorted_w
            np.cumsum(counts, axis=1, out=counts)
            if end is not None:
                counts = np.take(counts, end)  # the counts at each element's threshold end
            own = np.right_shift(counts, shift)
            own &= field_mask
            if sorted_w is not None:
                own *= sorted_w
            contrib = own.astype(np.float64)
            total = np.right_shift(counts, top_shift, out=counts)
            if sorted_w is not None:  # 0 / 0 where nothing weighted precedes an unweighted example
                np.maximum(total, 1, out=total)
            contrib /= total  # float64 division: scikit-learn's precision TP / N
            if not single_word:  # elements of other words read a foreign field: drop them
                contrib *= (sorted_code >> 6) == w
            # a serial per-row sum in sorted order: the result does not depend on the chunking
            sums.scatter_add_(1, torch.from_numpy(sorted_code), torch.from_numpy(contrib))
        return sums
    sorted_code = code[order]
    shift = sorted_code if single_word else sorted_code & 63
    sorted_w = None if weights is None else weights[order]
    sums = torch.zeros((c, n_bins), dtype=torch.float64, device=order.device)
    for w, unit in enumerate(units):
        counts = unit[order] if sorted_w is None else unit[order] * sorted_w
        counts = torch.cumsum(counts, dim=1)
        if end is not None:
            counts = counts.view(-1)[end]
        own = torch.bitwise_right_shift(counts, shift).bitwise_and_(field_mask)
        if sorted_w is not None:
            own.mul_(sorted_w)
        total = torch.bitwise_right_shift(counts, top_shift)
        contrib = own.to(torch.float64).div_(total.clamp_(min=1) if sorted_w is not None else total)
        if not single_word:
            contrib.mul_((sorted_code >> 6) == w)
        sums.scatter_add_(1, sorted_code, contrib)
    return sums


def _point_biserial_chunk(block: torch.Tensor, lab: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Point-biserial r ``[c, L]`` of a chunk ``[c, n]`` (any float dtype) against 0/1 labels.

    ``r_l = S_l / sqrt(SS * n_l * (n - n_l) / n)`` with ``SS`` the sum of squared deviations from
    the neuron's mean and ``S_l`` the sum of deviations over label l's examples (centred sums
    in float64, so a large mean costs no precision). 0 where SS = 0 (constant neuron) or
    ``n_l`` is 0 or n.
    """
    c, n = block.shape
    # contiguous rows: a row's sums then do not depend on the layout or the chunk it came in
    x = block.to(torch.float64).contiguous()
    x = x - x.sum(dim=1, keepdim=True) / n  # out of place: block may be the caller's array
    ss = (x * x).sum(dim=1)  # [c]
    s = torch.zeros((c, positives.shape[0]), dtype=torch.float64, device=block.device)
    s.index_add_(1, lab, x)
    return _r_from_sums(s, ss[:, None], positives[None, :], torch.tensor(float(n), dtype=torch.float64))


def _r_from_sums(s, ss, n_pos, n_total) -> torch.Tensor:
    denom = torch.sqrt(ss.clamp(min=0) * n_pos * (n_total - n_pos) / n_total)
    r = torch.where(denom > 0, s / torch.where(denom > 0, denom, 1.0), 0.0)
    return r.clamp_(-1.0, 1.0)


def average_precision(scores, labels, *, n_labels: int | None = None, chunk_size: int | None = None,
                      memory_budget_mb: float = 256.0, threads: int | None = None,
                      method: str = "auto", return_separation: bool = False):
    """One-vs-rest average precision of every neuron for every label, as scikit-learn computes it.

    Parameters
    ----------
    scores : array [n_examples, n_neurons], numpy or torch, fp16/bf16/fp32/fp64, CPU or CUDA.
        Activations; higher means "more like the positive label". NaN or infinite values raise
        ``UserError`` (scikit-learn rejects them too). Computation runs on the tensor's device.
    labels : array [n_examples] of integers in ``0..L-1``.
        Label ``l`` is positive for row ``l`` of the result, every other label negative.
    n_labels : int, optional
        L; default ``labels.max() + 1``. Every label must occur at least once, otherwise AP is
        undefined and ``UserError`` is raised (scikit-learn would only warn and return 0).
    chunk_size : int, optional
        Neurons per chunk; default chosen from ``memory_budget_mb`` and ``n_examples``.
    memory_budget_mb : float
        Approximate working memory of all chunks in flight (the input matrix not counted).
    threads : int, optional
        CPU only: chunks processed in parallel, each with one intra-op thread; default
        ``torch.get_num_threads()``. Results do not depend on it.
    method : "auto" | "sort"
        "auto": fp16/bf16 scores are ordered by their 16-bit keys (radix sort on CPU), other
        dtypes by a comparison sort. "sort": always the comparison sort. Both give the same AP
        (tested against each other and against scikit-learn).
    return_separation : bool
        Also return the point-biserial correlation of every (label, neuron), computed in the
        same pass (see ``point_biserial``): the secondary key of ``top_k`` / ``bottom_k``.

    Returns
    -------
    np.ndarray [L, n_neurons] float64
        ``ap[l, j] == average_precision_score(labels == l, scores[:, j])`` to ~1e-16. Tied scores
        form one threshold (scikit-learn semantics). A constant neuron gets the positive rate
        ``mean(labels == l)``. With ``n_neurons == 0`` the result has shape ``[L, 0]``.
        With ``return_separation``: ``(ap, r)``, r float64 ``[L, n_neurons]``.
    """
    x = _check_scores(scores)
    n, n_neurons = x.shape
    sort_dtype = _sort_dtype(x.dtype)
    device = x.device
    lab, L = _validate_labels(labels, n, n_labels, device)
    positives = torch.bincount(lab, minlength=L).to(torch.float64)
    if method not in ("auto", "sort"):
        raise UserError(f"method must be 'auto' or 'sort', got {method!r}")
    in_flight = max(1, threads if threads is not None else torch.get_num_threads())
    user_chunk = chunk_size
    chunk_size = _chunk_size(chunk_size, n, memory_budget_mb, in_flight)
    packing = _packing(lab, L, int(positives.max().item()), n)
    label_bins = packing[4]
    n_bins = 64 * len(packing[3])
    radix = x.dtype in (torch.float16, torch.bfloat16) and method != "sort"

    out = torch.empty((L, n_neurons), dtype=torch.float64, device=device)
    sep = torch.empty((L, n_neurons), dtype=torch.float64, device=device) if return_separation else None

    bits, lab8 = _compiled_inputs(x, lab, L) if radix else (None, None)
    if bits is not None and user_chunk is None:
        chunk_size = max(chunk_size, _MIN_COMPILED_CHUNK)

    def run(start: int) -> None:
        stop = min(start + chunk_size, n_neurons)
        if bits is not None:
            sums = np.empty((stop - start, L), dtype=np.float64)
            if not ap_kernels.ap_sums(bits, start, stop, lab8, L, _NONFINITE_MAG[x.dtype], sums):
                raise _nonfinite_error()
            out[:, start:stop] = torch.from_numpy(sums).t() / positives[:, None]
            if sep is not None:
                sep[:, start:stop] = _point_biserial_chunk(_columns(x, start, stop), lab, positives).t()
            return
        block, (order, end) = _order_columns(x, start, stop, radix, sort_dtype)
        sums = torch.as_tensor(_ordered_sums(order, end, packing, n_bins))[:, label_bins]
        out[:, start:stop] = sums.t() / positives[:, None]
        if sep is not None:
            sep[:, start:stop] = _point_biserial_chunk(block, lab, positives).t()

    _run_chunks(run, range(0, n_neurons, chunk_size), device, threads)
    ap = out.cpu().numpy()
    return (ap, sep.cpu().numpy()) if return_separation else ap


def _run_chunks(run, starts, device, threads) -> None:
    workers = min(threads if threads is not None else torch.get_num_threads(), len(starts))
    if device.type != "cpu" or workers <= 1:
        for start in starts:
            run(start)
        return
    # Chunks in parallel, one intra-op thread each: several steps (cumsum, scatter) are serial
    # inside torch, so chunk-level threads use the cores better. Torch ops and numpy's sort
    # release the GIL; set_num_threads in a worker only affects that worker thread.
    def worker(start: int) -> None:
        torch.set_num_threads(1)
        run(start)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(worker, start) for start in starts]:
            future.result()


def point_biserial(scores, labels, *, n_labels: int | None = None) -> np.ndarray:
    """Point-biserial correlation ``r[l, j]`` of ``scores[:, j]`` with the label ``labels == l``.

    That is Pearson's r between the activation and the 0/1 one-vs-rest label:
    ``(mean_pos - mean_neg) * sqrt(p (1 - p)) / std`` (population std, ``p`` the positive
    rate). Bounded in [-1, 1]; 0 for a constant neuron. float64 ``[L, n_neurons]``; the same
    values ``average_precision(..., return_separation=True)`` returns (it is computed there in
    the same pass; this is the stand-alone form).
    """
    x = _check_scores(scores)
    lab, L = _validate_labels(labels, x.shape[0], n_labels, x.device)
    positives = torch.bincount(lab, minlength=L).to(torch.float64)
    return _point_biserial_chunk(x.t(), lab, positives).t().cpu().numpy()


def resampled_average_precision(scores, labels, weights, *, n_labels: int | None = None,
                                chunk_size: int | None = None, memory_budget_mb: float = 256.0,
                                threads: int | None = None, method: str = "auto"):
    """AP and point-biserial r of every neuron for B resamples of the rows, one sort per neuron.

    Parameters
    ----------
    scores : array [n_examples, n_neurons] (as for ``average_precision``).
    labels : array [n_examples] of integers in ``0..L-1``.
    weights : integer array [B, n_examples] >= 0
        ``weights[b, i]`` = how many times row i occurs in resample b (a bootstrap resample's
        ``bincount``). Every label must have a positive total weight in every resample.
    Others as for ``average_precision``.

    Returns
    -------
    (ap, r) : float64 ``[B, L, n_neurons]`` each
        ``ap[b]`` equals ``average_precision`` of the resampled rows (row i repeated
        ``weights[b, i]`` times) to ~1e-16: a resample reorders nothing, so the order and the
        tie groups of one sort serve every resample, with weighted running counts. ``r[b]`` is
        the point-biserial correlation on the resampled rows (weighted moments, float64).
    """
    x = _check_scores(scores)
    n, n_neurons = x.shape
    sort_dtype = _sort_dtype(x.dtype)
    device = x.device
    lab, L = _validate_labels(labels, n, n_labels, device, require_all=False)
    w = _as_tensor(weights, "weights")
    if w.ndim != 2 or w.shape[1] != n:
        raise UserError(f"weights must have shape [n_resamples, n_examples=[{n}]], got {tuple(w.shape)}")
    if w.is_floating_point() and not torch.equal(w, w.round()):
        raise UserError("weights must be integer multiplicities (how often each row is drawn)")
    w = w.to(device=device, dtype=torch.int64)
    if w.numel() and int(w.min()) < 0:
        raise UserError("weights must be >= 0 (multiplicities)")
    B = w.shape[0]
    onehot = torch.nn.functional.one_hot(lab, L).to(torch.int64)  # [n, L]
    positives = w @ onehot  # [B, L] weighted positives
    if B and bool((positives == 0).any()):
        b, l = torch.nonzero(positives == 0)[0].tolist()
        raise UserError(f"resample {b} has no example of label {l}, so its average precision is "
                        "undefined; resample within each language (stratified)")
    if method not in ("auto", "sort"):
        raise UserError(f"method must be 'auto' or 'sort', got {method!r}")
    totals = w.sum(dim=1)  # [B]
    packing = _packing(lab, L, int(positives.max()) if B else 1, int(totals.max()) if B else 1)
    label_bins = packing[4]
    n_bins = 64 * len(packing[3])
    radix = x.dtype in (torch.float16, torch.bfloat16) and method != "sort"
    in_flight = max(1, threads if threads is not None else torch.get_num_threads())
    user_chunk = chunk_size
    chunk_size = _chunk_size(chunk_size, n, memory_budget_mb, in_flight)
    bits, lab8 = _compiled_inputs(x, lab, L, ap_kernels.MAX_EXAMPLES_RESAMPLED) if radix else (None, None)
    if user_chunk is None:
        if bits is not None:
            chunk_size = max(chunk_size, _MIN_COMPILED_CHUNK)
        # every resample adds [chunk, L] float64 sums and r's temporaries: the budget caps the chunk
        per_neuron = n * _BYTES_PER_ELEMENT + B * L * _BYTES_PER_RESAMPLE_LABEL
        chunk_size = max(1, min(chunk_size, int(memory_budget_mb * 2**20) // in_flight // per_neuron))
    # multiplicities in the smallest integer type that holds them: gathering them is the
    # largest cost of a resample
    small = torch.int8 if int(w.max() if w.numel() else 0) < 2**7 else torch.int16 \
        if int(w.max()) < 2**15 else torch.int64
    w_gather = w.to(small) if device.type == "cpu" else w
    w_gather = w_gather.numpy() if device.type == "cpu" else w_gather
    wf = w.t().to(torch.float64)  # [n, B]
    pos_f = positives.to(torch.float64)
    tot_f = totals.to(torch.float64)
    label_rows = [torch.nonzero(lab == l).squeeze(1) for l in range(L)]
    ap = torch.empty((B, L, n_neurons), dtype=torch.float64, device=device)
    sep = torch.empty((B, L, n_neurons), dtype=torch.float64, device=device)

    if bits is not None:
        w_rows = np.ascontiguousarray(wf.numpy())  # [n, B]: a row's weights for all resamples

    def run(start: int) -> None:
        stop = min(start + chunk_size, n_neurons)
        if bits is not None:
            sums = np.empty((stop - start, L, B), dtype=np.float64)
            if not ap_kernels.resampled_ap_sums(bits, start, stop, lab8, L, _NONFINITE_MAG[x.dtype],
                                                w_rows, sums):
                raise _nonfinite_error()
            ap[:, :, start:stop] = torch.from_numpy(sums).permute(2, 1, 0) / pos_f[:, :, None]
            block = _columns(x, start, stop)
        else:
            block, (order, end) = _order_columns(x, start, stop, radix, sort_dtype)  # one sort serves every resample
            for b in range(B):
                sums = torch.as_tensor(_ordered_sums(order, end, packing, n_bins, w_gather[b]))[:, label_bins]
                ap[b, :, start:stop] = sums.t() / pos_f[b][:, None]
        # weighted moments about the neuron's mean over all rows (a fixed shift per neuron keeps
        # the sums of squares well conditioned), per label by matrix products
        xd = block.to(torch.float64)
        xd = xd - xd.mean(dim=1, keepdim=True)  # out of place: block may be the caller's array
        m1 = xd @ wf  # [c, B]
        m2 = (xd * xd) @ wf
        s = torch.stack([xd[:, rows] @ wf[rows] for rows in label_rows], dim=1)  # [c, L, B]
        mean = m1 / tot_f  # [c, B]
        ss = m2 - m1 * mean
        centred = s - pos_f.t()[None] * mean[:, None, :]
        r = _r_from_sums(centred, ss[:, None, :], pos_f.t()[None], tot_f[None, None, :])
        sep[:, :, start:stop] = r.permute(2, 1, 0)

    if B and n_neurons:
        _run_chunks(run, range(0, n_neurons, chunk_size), device, threads)
    return ap.cpu().numpy(), sep.cpu().numpy()


def _check_row(ap_row, k: int, separation=None) -> tuple[np.ndarray, np.ndarray | None]:
    row = np.asarray(ap_row)
    if row.ndim != 1:
        raise UserError(f"ap_row must be 1-D [n_neurons], got shape {row.shape}")
    if np.isnan(row).any():
        raise UserError("ap_row contains NaN; rank only finite average precisions")
    if not 0 <= int(k) <= row.shape[0]:
        raise UserError(f"k={k} is outside 0..{row.shape[0]} (the number of neurons)")
    sep = None
    if separation is not None:
        sep = np.asarray(separation, dtype=np.float64)
        if sep.shape != row.shape:
            raise UserError(f"separation must have the AP row's shape {row.shape}, got {sep.shape}")
        if np.isnan(sep).any():
            raise UserError("separation contains NaN; pass the point-biserial r of the same pass")
    return row.astype(np.float64), sep


def _best(primary: np.ndarray, secondary: np.ndarray | None, k: int) -> np.ndarray:
    """Indices of the k smallest ``(primary, secondary, index)`` in that order (lexicographic)."""
    k = int(k)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if k < primary.size:
        # every neuron tied with the k-th value is a candidate; the rest cannot enter
        kth = np.partition(primary, k - 1)[k - 1]
        candidates = np.flatnonzero(primary <= kth)
    else:
        candidates = np.arange(primary.size)
    keys = (candidates, primary[candidates]) if secondary is None else \
        (candidates, secondary[candidates], primary[candidates])
    # -0.0 and 0.0 compare equal, so they tie as values do
    return candidates[np.lexsort(keys)[:k]].astype(np.int64)


def top_k(ap_row: np.ndarray, k: int, separation: np.ndarray | None = None) -> np.ndarray:
    """Flat indices of the ``k`` neurons with the highest AP, best first.

    Order (deterministic, total): AP descending; among equal AP, ``separation`` descending
    (the point-biserial r of the same language, see the module docstring); then the lower flat
    index. Without ``separation`` equal AP goes to the lower index. ``-0.0 == 0.0``; NaN raises
    ``UserError``. ``top_k(row, k, sep)`` is a prefix of ``top_k(row, K, sep)`` for k <= K.
    Returns int64 ``[k]``.
    """
    row, sep = _check_row(ap_row, k, separation)
    return _best(-row, None if sep is None else -sep, k)


def bottom_k(ap_row: np.ndarray, k: int, separation: np.ndarray | None = None) -> np.ndarray:
    """Flat indices of the ``k`` neurons with the lowest AP, lowest first.

    Order: AP ascending; among equal AP, ``separation`` ascending (most negatively associated
    with the language first); then the lower flat index. NaN raises ``UserError``. Returns
    int64 ``[k]``.
    """
    row, sep = _check_row(ap_row, k, separation)
    return _best(row, sep, k)


def cut_ties(ap_row: np.ndarray, k: int, side: str = "top") -> dict:
    """The tie group at the top-k (or bottom-k) cut of one AP row.

    Returns ``{"k", "value", "tied", "above", "taken"}``: ``value`` the AP of the k-th neuron,
    ``tied`` how many neurons have exactly that AP, ``above`` how many are strictly better
    (all of them are in the set), ``taken = k - above`` how many of the tie group the set
    holds. ``taken < tied`` means the secondary key decided which tied neurons made the cut.
    k = 0: ``value`` None and counts 0.
    """
    if side not in ("top", "bottom"):
        raise UserError(f"side must be 'top' or 'bottom', got {side!r}")
    row, _ = _check_row(ap_row, k)
    k = int(k)
    if k == 0:
        return {"k": 0, "value": None, "tied": 0, "above": 0, "taken": 0}
    key = -row if side == "top" else row
    kth = float(np.partition(key, k - 1)[k - 1])
    above = int(np.count_nonzero(key < kth))
    tied = int(np.count_nonzero(key == kth))
    return {"k": k, "value": float(-kth if side == "top" else kth) + 0.0, "tied": tied, "above": above,
            "taken": k - above}


def on_device(block: np.ndarray, device: str):
    """A stored activation block (numpy array or CPU tensor) as ``average_precision`` input on ``device``.

    On CPU the block is passed as it is (fp16 keeps the 16-bit radix path); elsewhere
    it becomes a tensor on that device. AP of fp16 values equals AP of the same values in
    float32 (the cast is exact), so the store's precision is the only rounding.
    """
    if str(device) == "cpu":
        return block
    if isinstance(block, torch.Tensor):  # e.g. a bfloat16 block, which numpy cannot hold
        return block.to(device)
    return torch.from_numpy(np.ascontiguousarray(block)).to(device)
