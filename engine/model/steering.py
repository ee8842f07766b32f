"""Median-value intervention on language-control neurons (SPEC §2 "steering").

To steer the decoder toward language ℓ with neurons identified at step t, every chosen
neuron's activation is replaced by ℓ's median ("on_p50") over ℓ's ASR identification examples
at step t, at every decoding position (default) or only from position t on (option).

Decisions (the issue and the paper are silent):
- Neurons live in the decoder stack only; flat indices are catalog order of "text_decoder" and
  are mapped to (component, channels) with ``Catalog.locate``.
- Positions are indices into the decoder input ``[decoder_start, __tgt__, y1, y2, ...]``
  (SPEC §2): position t is where y_t is predicted. Under the KV cache the first decoder call
  covers positions 0..1 and each later call one position; the absolute position of a call is
  read from the self-attention cache length in a pre-hook on ``text_decoder``, so the same
  hooks also serve a teacher-forced full-sequence forward (cache length 0). The cache is found
  by its type, not by keyword (transformers 5.24 renamed ``past_key_values`` to ``cache``); a
  call whose position cannot be told raises rather than defaulting to 0.
- Cross-attention keys/values ("step_invariant" components) run over encoder positions and are
  computed once and cached at the first decoder call; they cannot vary by step. They are set
  at every encoder position for the whole generation, also in "from position t" mode.
- A neuron is overwritten in the component's output (before whatever consumes it: e.g.
  ``ffn.fc1`` is set before the FFN activation), which is exactly where the recorder reads it.
- k = 0 (no neurons) registers no hooks at all, so it reproduces the unsteered output exactly.
- Random control: the same number of decoder neurons drawn uniformly without replacement from
  a seeded ``numpy.random.Generator``, set to ℓ's on_p50 of those neurons.
- Generation is greedy through the recorder (``engine.model.recorder.record_batches``), identical
  with and without steering and identical to how identification prefixes were generated.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from engine.errors import UserError
from engine.model.hooks import hooked
from engine.model.lm_recorder import greedy_outputs
from engine.model.recorder import record_batches
from engine.model.speech_llm import family
from engine.science.ranking import bottom_k, top_k

DECODER = "text_decoder"


# ---------------------------------------------------------------------------------------------
# Neuron selection and values


def control_neurons(ap_row: np.ndarray, k: int, separation: np.ndarray | None = None) -> np.ndarray:
    """Language-control neurons of one language and step: top-k ∪ bottom-k of its ASR AP row.

    ``ap_row``: [n_neurons] float AP over the decoder stack at one step; ``separation``: the
    same row's point-biserial r (the rank stage's ``*_sep.npy``), which orders neurons of equal
    AP (``engine.science.ranking.top_k`` / ``bottom_k``; without it, the lower index). Returns sorted
    unique int64 flat indices (2k of them unless 2k > n_neurons, then all neurons); k = 0 gives
    none.
    """
    ap_row = np.asarray(ap_row)
    if ap_row.ndim != 1:
        raise UserError(f"ap_row must be one AP row [n_neurons], got shape {ap_row.shape}")
    if k < 0:
        raise UserError(f"k must be >= 0, got {k}")
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    k = min(k, ap_row.size)
    chosen = np.union1d(np.asarray(top_k(ap_row, k, separation)), np.asarray(bottom_k(ap_row, k, separation)))
    return chosen.astype(np.int64)


def random_neurons(n_neurons: int, n: int, seed: int | Sequence[int]) -> np.ndarray:
    """``n`` distinct flat indices in [0, n_neurons), uniform without replacement, sorted int64.

    ``seed`` is anything ``numpy.random.default_rng`` accepts (e.g. ``[base, lang_index, t]``
    for an independent stream per language and step); same seed, same neurons.
    """
    if not 0 <= n <= n_neurons:
        raise UserError(f"cannot draw {n} random neurons out of {n_neurons}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_neurons, size=n, replace=False)).astype(np.int64)


def median_activations(activity: np.ndarray, langs: Sequence[str], lang: str, *,
                       chunk_cols: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(on_p50, off_p50) of every neuron: medians over ``lang``'s rows and over the other rows.

    ``activity``: [n_examples, n_neurons] (array or array-like supporting 2-D slicing, e.g. a
    zarr array) of one task and step; rows of examples whose output ended before the step are
    NaN and are ignored (``nanmedian``). ``langs``: [n_examples] language of each row.
    Returns two float32 [n_neurons] vectors; a neuron with no finite value among the rows is
    NaN. Columns are read ``chunk_cols`` at a time so the paper-size matrix never sits in RAM
    twice. UserError when ``lang`` has no rows or no other language does.
    """
    langs_arr = np.asarray(langs)
    if activity.shape[0] != langs_arr.shape[0]:
        raise UserError(f"activity has {activity.shape[0]} rows but {langs_arr.shape[0]} languages")
    on = np.flatnonzero(langs_arr == lang)
    off = np.flatnonzero(langs_arr != lang)
    if on.size == 0 or off.size == 0:
        raise UserError(f"median of '{lang}' needs rows of '{lang}' and of another language; "
                        f"got {on.size} and {off.size}")
    n_neurons = activity.shape[1]
    on_p50 = np.empty(n_neurons, dtype=np.float32)
    off_p50 = np.empty(n_neurons, dtype=np.float32)
    for start in range(0, n_neurons, chunk_cols):
        block = np.asarray(activity[:, start:start + chunk_cols], dtype=np.float32)
        with warnings.catch_warnings():  # all-NaN columns are reported as NaN, by design
            warnings.simplefilter("ignore", RuntimeWarning)
            on_p50[start:start + block.shape[1]] = np.nanmedian(block[on], axis=0)
            off_p50[start:start + block.shape[1]] = np.nanmedian(block[off], axis=0)
    return on_p50, off_p50


# ---------------------------------------------------------------------------------------------
# The intervention


@dataclass
class _CallPositions:
    """Absolute decoder positions of the current ``text_decoder`` call: start .. start+length-1.

    ``origin``: the column of "step 0". SeamlessM4T: 0 (position t of ``[start, tag, y1, ...]``
    is step t). Speech LLM: P - 2 for a prompt of width P (step 1 is its last column), set at the
    first call; only its generating columns, steps 1 onward, are ever steered (the prompt is
    the input, as the encoder is SeamlessM4T's)."""
    start: int = 0
    length: int = 0
    origin: int = 0
    decoder_only: bool = False


def _cache_in(args: tuple, kwargs: dict):
    """The one ``transformers`` Cache among a call's arguments, whatever its keyword (None if none).

    transformers renamed the keyword (``past_key_values`` up to 5.23, ``cache`` from 5.24), so
    the cache is found by type, not by name. A cache-like argument of another type (a legacy
    tuple, a future class) fails loudly: guessing position 0 would steer the wrong positions.
    """
    from transformers.cache_utils import Cache

    caches = {id(v): v for v in (*args, *kwargs.values()) if isinstance(v, Cache)}
    if len(caches) > 1:
        raise UserError(f"{DECODER} was called with {len(caches)} caches; cannot tell the absolute "
                        "decoder position: this transformers version is not supported by steering")
    if caches:
        return next(iter(caches.values()))
    odd = [name for name, v in kwargs.items()
           if ("cache" in name or "past" in name) and v is not None and not isinstance(v, (bool, torch.Tensor))]
    if odd:
        raise UserError(f"{DECODER} got a cache of unknown type in '{odd[0]}' "
                        f"({type(kwargs[odd[0]]).__name__}); cannot tell the absolute decoder position: "
                        "this transformers version is not supported by steering")
    return None


def _decoder_call_positions(state: _CallPositions):
    def pre_hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        source = ids if ids is not None else embeds
        length = int(source.shape[1]) if source is not None else 0
        cache = _cache_in(args, kwargs)
        start = int(cache.get_seq_length()) if cache is not None else 0
        if cache is None and length == 1 and state.length > 0:
            # every pass starts with [decoder_start, tag]: a lone position after an earlier call
            # is an incremental step whose cache was not found
            raise UserError(f"{DECODER} was called for one position with no cache among its "
                            f"arguments ({sorted(kwargs)}); cannot tell the absolute decoder position: "
                            "this transformers version is not supported by steering")
        if state.decoder_only and cache is None:
            # a full-sequence forward has no prompt boundary to tell step 1 by
            raise UserError("steering a speech LLM needs KV-cache generation (its prompt's width marks "
                            "step 1); a forward without a cache cannot be steered")
        state.start, state.length = start, length
        if state.decoder_only and start == 0:
            state.origin = length - 2
    return pre_hook


def _overwrite_hook(component, channels: torch.Tensor, values: torch.Tensor,
                    from_position: int | None, state: _CallPositions):
    everywhere = (from_position is None and not state.decoder_only) or component.position == "step_invariant"

    def overwrite(tensor):
        n_positions = tensor.movedim(component.channel_axis, -1).shape[-2]
        # a speech LLM: from step 1 (its prompt's last column) when no step is given
        first_abs = state.origin + (from_position if from_position is not None else 1)
        if not everywhere and first_abs >= state.start + n_positions:
            return None  # this call ends before the first steered position: nothing to set
        out = tensor.clone()
        # (B, T, C) view of the clone whatever the layout; writing into it writes the clone
        view = out.movedim(component.channel_axis, -1)
        vals = values.to(device=view.device, dtype=view.dtype)
        ch = channels.to(view.device)
        if everywhere:
            view[..., ch] = vals
        else:
            view[..., max(first_abs - state.start, 0):, ch] = vals
        return out

    if component.reads == "input":  # a speech LLM's MLP intermediate: down_proj's input
        def pre_hook(module, inputs):
            out = overwrite(inputs[0])
            return None if out is None else (out, *inputs[1:])
        return pre_hook

    def hook(module, inputs, output):
        tensor = output[0] if isinstance(output, tuple) else output
        out = overwrite(tensor)
        if out is None:
            return None
        return (out, *output[1:]) if isinstance(output, tuple) else out
    return hook


def _model_of(lm) -> torch.nn.Module:
    return lm.model if hasattr(lm, "model") and isinstance(lm.model, torch.nn.Module) else lm


def _validate(catalog, neurons, values, from_position) -> tuple[np.ndarray, np.ndarray]:
    neurons = np.asarray(neurons)
    values = np.asarray(values, dtype=np.float32)
    if neurons.ndim != 1 or values.shape != neurons.shape:
        raise UserError(f"neurons and values must be 1-D of equal length, got {neurons.shape} "
                        f"and {values.shape}")
    if neurons.size and not np.issubdtype(neurons.dtype, np.integer):
        raise UserError(f"neurons must be integer flat indices, got dtype {neurons.dtype}")
    neurons = neurons.astype(np.int64)
    n_total = catalog.n_neurons(DECODER)
    if neurons.size and (neurons.min() < 0 or neurons.max() >= n_total):
        raise UserError(f"neuron indices must lie in [0, {n_total}) of the decoder stack")
    if np.unique(neurons).size != neurons.size:
        raise UserError("neuron indices must be distinct")
    if not np.all(np.isfinite(values)):
        raise UserError("steering values must be finite (a NaN median means the neuron had no "
                        "valid example at that step: drop it or recompute the medians)")
    if from_position is not None and (int(from_position) != from_position or from_position < 0):
        raise UserError(f"from_position must be None or an int >= 0, got {from_position!r}")
    return neurons, values


@contextmanager
def steer(lm, catalog, neurons: np.ndarray, values: np.ndarray,
          from_position: int | None = None) -> Iterator[None]:
    """Within the block, decoder neurons ``neurons`` read ``values`` at every forward.

    ``lm``: a LoadedModel (or the SeamlessM4Tv2Model itself). ``catalog``: the model's
    Catalog. ``neurons``: [n] distinct int flat indices into the "text_decoder" stack;
    ``values``: [n] finite floats, ``values[i]`` for ``neurons[i]``. ``from_position``: None
    sets every decoder position; an int t sets positions >= t of ``[start, tag, y1, ...]``
    only (cross-attention k/v are always set, see the module docstring). Works under the KV
    cache and for full-sequence forwards. Hooks are removed on exit, also on error.
    """
    neurons, values = _validate(catalog, neurons, values, from_position)
    if neurons.size == 0:
        yield
        return
    model = _model_of(lm)
    order = np.argsort(neurons)
    sorted_neurons = neurons[order]
    decoder_only = bool(getattr(lm, "decoder_only", False))
    state = _CallPositions(decoder_only=decoder_only)
    hooks, pre_hooks = {}, {}
    for component, channels in catalog.locate(DECODER, neurons):
        channels = np.asarray(channels, dtype=np.int64)
        where = order[np.searchsorted(sorted_neurons, component.offset + channels)]
        fn = _overwrite_hook(component, torch.from_numpy(channels), torch.from_numpy(values[where]),
                             from_position, state)
        if component.reads == "input":
            pre_hooks[component.path] = fn
        elif component.path in hooks:  # never: one output component per module
            raise RuntimeError(f"two components read the output of {component.path}")
        else:
            hooks[component.path] = fn
    if decoder_only:
        decoder_module = family(model.config).lm
    else:
        decoder_module = DECODER
    with hooked(model, hooks, pre_hooks, kw_pre_hooks={decoder_module: _decoder_call_positions(state)}):
        yield


# ---------------------------------------------------------------------------------------------
# Generation


@dataclass
class Generated:
    """One greedy output: tokens after ``[decoder_start, __tgt__]`` up to (excluding) EOS."""
    output_ids: list[int]
    output_text: str


def generate(lm, catalog, inputs: Sequence, *, batch_size: int = 8,
             max_new_tokens: int | None = None) -> list[Generated]:
    """Greedy text outputs of ``inputs`` (``engine.model.recorder.ModelInput``), in input order.

    Decodes through ``engine.model.recorder.record_batches`` (recording only step 1, which is
    cheap), so steered and unsteered outputs are produced exactly as the identification run
    produced its greedy prefixes (same batching, padding handling and greedy settings). Use it
    inside :func:`steer` for steered outputs, outside for the baseline. ``max_new_tokens``
    defaults to the model's generation config (256 if it has none).
    """
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    if max_new_tokens is None:
        max_new_tokens = getattr(_model_of(lm).generation_config, "max_new_tokens", None) or 256
    if getattr(lm, "decoder_only", False):  # a speech LLM: the recorder's greedy generate, nothing recorded

        return [Generated(list(ids), text) for ids, text in
                greedy_outputs(lm, list(inputs), batch_size=batch_size, max_new_tokens=int(max_new_tokens))]
    results: list[Generated] = []
    for record in record_batches(lm, catalog, list(inputs), steps=(1,), batch_size=batch_size,
                                 prefix="greedy", max_new_tokens=int(max_new_tokens)):
        results += [Generated(list(ids), text) for ids, text in zip(record.output_ids, record.output_text)]
    return results
