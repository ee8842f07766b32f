"""Average precision of every neuron for every language, exact and fast; top-k / bottom-k.

``average_precision`` reproduces ``sklearn.metrics.average_precision_score`` (one-vs-rest,
label ``l`` positive) for every (language, neuron) pair, ties included, from **one sort per
neuron** shared by all languages. Neurons are processed in chunks, so peak
memory is set by ``memory_budget_mb``, not by the size of the matrix.

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

Two ways to order each neuron's examples (both tested against scikit-learn and each other):

- fp16 / bf16 scores (``method="auto"``): a **counting sort** on the 16-bit keys. The value's
  bits map to an order-preserving integer (-0.0 and +0.0 share one key); a histogram of the
  packed increments per key, summed cumulatively from the largest key down, gives at every key
  the counts of all examples scoring ``>=`` it, which is ``TP_l`` and ``N`` at that threshold's
  end; ties group for free. Cost per neuron: O(n + key range), no comparison sort.
- other dtypes (or ``method="sort"``): a stable ``torch.sort`` descending; the last position of
  each run of equal values is a threshold end and each element reads the counts there.

Neurons are processed in chunks (peak memory follows the chunk, not the matrix); on CPU chunks
run in parallel threads with one intra-op thread each, because several steps (cumulative sums
over flattened chunks, ``nonzero``, ``scatter_add``) are serial inside torch. Figures:
``python -m engine bench ap``.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from engine.errors import UserError

__all__ = ["average_precision", "top_k", "bottom_k"]

# Working bytes per (example, neuron) element of a chunk, counted from the live tensors of
# _chunk_ap: sorted values (4-8), sort indices (8), label codes (8), threshold mask (1), group
# index and end positions (~14), packed increments, counts and gathered counts (24), float64
# numerators/denominators/contributions (24), with slack for the allocator.
_BYTES_PER_ELEMENT = 112


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


def _validate_labels(labels, n_examples: int, n_labels: int | None, device) -> tuple[torch.Tensor, int]:
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
    if missing:
        raise UserError(
            f"label(s) {missing} have no positive example, so their average precision is undefined; "
            "drop those languages or add examples")
    return lab, n_labels


def average_precision(scores, labels, *, n_labels: int | None = None, chunk_size: int | None = None,
                      memory_budget_mb: float = 256.0, threads: int | None = None,
                      method: str = "auto") -> np.ndarray:
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
        "auto": fp16/bf16 scores use a counting sort on their 16-bit keys (one histogram and
        one cumulative sum per neuron; ties are equal keys, so they group for free), other
        dtypes a comparison sort. "sort": always the comparison sort. Both give the same AP
        (tested against each other and against scikit-learn).

    Returns
    -------
    np.ndarray [L, n_neurons] float64
        ``ap[l, j] == average_precision_score(labels == l, scores[:, j])`` to ~1e-16. Tied scores
        form one threshold (scikit-learn semantics). A constant neuron gets the positive rate
        ``mean(labels == l)``. With ``n_neurons == 0`` the result has shape ``[L, 0]``.
    """
    x = _as_tensor(scores, "scores")
    if x.ndim != 2:
        raise UserError(f"scores must be 2-D [n_examples, n_neurons], got shape {tuple(x.shape)}")
    n, n_neurons = x.shape
    if n < 1:
        raise UserError("scores has no examples (n_examples = 0)")
    sort_dtype = _sort_dtype(x.dtype)
    device = x.device
    lab, L = _validate_labels(labels, n, n_labels, device)
    positives = torch.bincount(lab, minlength=L).to(torch.float64)

    if method not in ("auto", "sort"):
        raise UserError(f"method must be 'auto' or 'sort', got {method!r}")
    explicit_chunk = chunk_size
    # About 2**20 elements per chunk keeps the working set cache-friendly (measured faster
    # than bigger chunks); the memory budget can only make chunks smaller.
    in_flight = max(1, threads if threads is not None else torch.get_num_threads())
    budget_elements = int(memory_budget_mb * 2**20 // _BYTES_PER_ELEMENT) // in_flight
    if chunk_size is None:
        chunk_size = max(1, min(budget_elements, 2**20) // n)
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise UserError(f"chunk_size must be >= 1, got {chunk_size}")

    # Running counts are packed into bit fields of one int64: one field of width `bits` per
    # label (enough for that label's positives) and, on top, a field counting all examples
    # (N_g). Labels that do not fit in one word go to further words, each with its own N field.
    bits = max(1, int(positives.max().item()).bit_length())
    total_bits = n.bit_length()
    per_word = (63 - total_bits) // bits
    if per_word < 1:
        raise UserError(f"n_examples={n} is too large for packed counts")
    n_words = math.ceil(L / per_word)
    top_shift = 63 - total_bits
    # Per example: `code` = 64 * word + field shift of its label (also its accumulation bin);
    # increments[w] = what the example adds to word w's running counts.
    word = lab // per_word
    shift = (lab % per_word) * bits
    code = word * 64 + shift
    increments = [torch.where(word == w, torch.ones_like(shift) << shift, torch.zeros_like(shift))
                  | (1 << top_shift) for w in range(n_words)]
    packing = (bits, top_shift, code, increments)
    # bin of label l in the accumulator, to read the per-label sums back
    label_bins = (torch.arange(L, device=device) // per_word) * 64 + \
        (torch.arange(L, device=device) % per_word) * bits

    out = torch.empty((L, n_neurons), dtype=torch.float64, device=device)

    counting = x.dtype in (torch.float16, torch.bfloat16) and method != "sort"
    if counting:
        field_shift = shift
        in_words = [(word == w).to(torch.float64) for w in range(n_words)]
        if explicit_chunk is None:
            chunk_size = max(1, min(budget_elements, 2**20) // (n + 2**16))

    def run(start: int) -> None:
        stop = min(start + chunk_size, n_neurons)
        if counting:
            block = x[:, start:stop].t().contiguous()  # [c, n] 16-bit floats
            sums = _chunk_ap_counting(block, packing, field_shift, in_words)[:, label_bins]
        else:
            # [c, n]: sorting along the last dim of a contiguous block is the fastest layout
            block = torch.empty((stop - start, n), dtype=sort_dtype, device=device)
            block.copy_(x[:, start:stop].t())  # one pass: cast and transpose
            sums = _chunk_ap(block, packing)[:, label_bins]
        out[:, start:stop] = sums.t() / positives[:, None]

    starts = range(0, n_neurons, chunk_size)
    workers = min(threads if threads is not None else torch.get_num_threads(), len(starts))
    if device.type != "cpu" or workers <= 1:
        for start in starts:
            run(start)
    else:
        # Chunks in parallel, one intra-op thread each: several steps (flat cumsum, nonzero,
        # scatter) are serial inside torch, so chunk-level threads use the cores better. Torch
        # ops release the GIL; set_num_threads in a worker only affects that worker thread.
        def worker(start: int) -> None:
            torch.set_num_threads(1)
            run(start)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(worker, start) for start in starts]:
                future.result()
    return out.cpu().numpy()


def _chunk_ap(block: torch.Tensor, packing) -> torch.Tensor:
    """Sum over examples of TP_l(g)/N_g per (neuron, label bin) for one chunk ``[c, n]``."""
    c, n = block.shape
    device = block.device
    bits, top_shift, code, increments = packing
    # Stable sort is the fastest CPU sort here; the order inside a tie does not matter because
    # a tie is one threshold.
    values, order = torch.sort(block, dim=1, descending=True, stable=True)
    # Descending sort puts NaN first; the extremes tell whether every value is finite.
    if not (bool(torch.isfinite(values[:, 0]).all()) and bool(torch.isfinite(values[:, -1]).all())):
        raise UserError("scores contain NaN or infinite values; remove or fill them before ranking")
    sorted_code = code[order]  # [c, n]

    # Threshold ends: last position of every run of equal values (each row's last position too).
    is_end = torch.ones((c, n), dtype=torch.bool, device=device)
    torch.ne(values[:, :-1], values[:, 1:], out=is_end[:, :-1])
    del values
    if bool(is_end.all()):  # no ties in the chunk: every element is its own threshold
        group = flat_end = None
    else:
        is_end = is_end.view(-1)
        flat_end = torch.nonzero(is_end).squeeze(1)  # ascending flat positions of ends
        # Rows always close with an end, so counting ends over the flattened chunk numbers the
        # groups globally; an element's group is the number of ends before it.
        group = torch.empty(c * n, dtype=torch.int64, device=device)
        group[0] = 0
        torch.cumsum(is_end[:-1], dim=0, out=group[1:])
    del is_end

    # Each element of label l contributes TP_l(g) / N_g at its threshold g; summed over the
    # elements of label l in g this is (TP_l(g) - TP_l(g-1)) * TP_l(g) / N_g, scikit-learn's
    # term (the 1/P_l factor is applied by the caller).
    single_word = len(increments) == 1
    field_shift = sorted_code.view(-1) if single_word else (sorted_code & 63).view(-1)
    sums = torch.zeros((c, 64 * len(increments)), dtype=torch.float64, device=device)
    field_mask = (1 << bits) - 1
    for w, increment in enumerate(increments):
        if single_word:  # computing the increment is cheaper than gathering it
            sorted_increment = torch.bitwise_left_shift(1, sorted_code).bitwise_or_(1 << top_shift)
        else:
            sorted_increment = increment[order]
        counts = torch.cumsum(sorted_increment, dim=1).view(-1)
        del sorted_increment
        if group is not None:
            counts = counts[flat_end][group]  # the counts at each element's threshold end
        own = torch.bitwise_right_shift(counts, field_shift).bitwise_and_(field_mask).to(torch.float64)
        n_at_end = torch.bitwise_right_shift(counts, top_shift)
        del counts
        contrib = own.div_(n_at_end)  # float64 division: scikit-learn's precision TP / N
        if len(increments) > 1:  # elements of other words read a foreign field: drop them
            contrib.mul_((sorted_code >> 6).view(-1) == w)
        sums.scatter_add_(1, sorted_code, contrib.view(c, n))
    return sums


def _chunk_ap_counting(block: torch.Tensor, packing, field_shift, in_words) -> torch.Tensor:
    """Per (neuron, label bin) sums of TP_l(g)/N_g for a 16-bit chunk ``[c, n]``, by counting sort.

    A 16-bit float maps to an order-preserving integer key (-0.0 and +0.0 share one key, as
    they compare equal). Histogramming the packed label increments by key and taking a
    cumulative sum from the largest key down gives, at each key, the packed counts of all
    examples scoring >= that value: exactly TP_l and N at that value's threshold end.
    """
    c, n = block.shape
    bits, top_shift, code, increments = packing
    if not bool(torch.isfinite(block).all()):
        raise UserError("scores contain NaN or infinite values; remove or fill them before ranking")
    raw = block.view(torch.int16).to(torch.int64)
    key = torch.where(raw >= 0, raw + 32768, 32768 - (raw & 0x7FFF))  # 1..65535, -0 == +0
    del raw
    top_key = int(key.max())
    position = torch.sub(top_key, key)  # 0 = the largest value
    del key
    width = int(position.max()) + 1
    field_mask = (1 << bits) - 1
    sums = torch.zeros((c, 64 * len(increments)), dtype=torch.float64, device=block.device)
    bins = code.expand(c, n)
    for increment, in_word in zip(increments, in_words):
        hist = torch.zeros((c, width), dtype=torch.int64, device=block.device)
        hist.scatter_add_(1, position, increment.expand(c, n))
        counts = torch.cumsum(hist, dim=1).gather(1, position)  # counts at >= own value
        del hist
        own = torch.bitwise_right_shift(counts, field_shift).bitwise_and_(field_mask).to(torch.float64)
        contrib = own.div_(torch.bitwise_right_shift(counts, top_shift))
        del counts
        if len(increments) > 1:  # examples of other words read a foreign field: drop them
            contrib.mul_(in_word)
        # a serial per-row sum: the result does not depend on the chunking
        sums.scatter_add_(1, bins, contrib)
    return sums


def _check_row(ap_row, k: int) -> np.ndarray:
    row = np.asarray(ap_row)
    if row.ndim != 1:
        raise UserError(f"ap_row must be 1-D [n_neurons], got shape {row.shape}")
    if np.isnan(row).any():
        raise UserError("ap_row contains NaN; rank only finite average precisions")
    if not 0 <= int(k) <= row.shape[0]:
        raise UserError(f"k={k} is outside 0..{row.shape[0]} (the number of neurons)")
    return row


def top_k(ap_row: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the ``k`` neurons with the highest AP, best first.

    Tie-breaking (deterministic): among equal AP values the lower flat neuron index comes
    first (stable sort on ``-ap``). ``-0.0`` and ``0.0`` are equal. NaN raises ``UserError``.
    Returns int64 ``[k]``.
    """
    row = _check_row(ap_row, k)
    return np.argsort(-row.astype(np.float64), kind="stable")[: int(k)].astype(np.int64)


def bottom_k(ap_row: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the ``k`` neurons with the lowest AP, lowest first.

    Tie-breaking (deterministic): among equal AP values the lower flat neuron index comes
    first (stable sort on ``ap``). NaN raises ``UserError``. Returns int64 ``[k]``.
    """
    row = _check_row(ap_row, k)
    return np.argsort(row.astype(np.float64), kind="stable")[: int(k)].astype(np.int64)


def on_device(block: np.ndarray, device: str):
    """A stored activation block as ``average_precision`` input on ``device``.

    On CPU the numpy array is passed as it is (fp16 keeps the 16-bit counting sort); elsewhere
    it becomes a tensor on that device. AP of fp16 values equals AP of the same values in
    float32 (the cast is exact), so the store's precision is the only rounding.
    """
    if str(device) == "cpu":
        return block
    return torch.from_numpy(np.ascontiguousarray(block)).to(device)
