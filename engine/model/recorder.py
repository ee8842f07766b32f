"""Record every catalog neuron per example: encoder components pooled, decoder components per step.

Per batch (one modality):
1. the encoder runs once with hooks that reduce each encoder component to its mean over valid
   positions (padding excluded) as soon as it fires, so no (B, T, C) activation is kept;
2. the prefix: greedy decoding by transformers' own ``generate`` on the precomputed encoder
   states (no second encoder pass, no scores or hidden states kept), or the gold reference;
3. one teacher-forced decoder pass over ``[decoder_start, lang_tag, y1, ...]`` whose hooks keep
   position t of each decoder component for every requested step t (the activity of step t,
   which predicts y_t), and pool cross-attention k/v over valid encoder positions.

Tasks that give the encoder the same input (S2T and ASR: one utterance, two target languages)
share step 1: ``record_shared_encoder`` encodes once and runs steps 2-3 per task.

Step t reads position index t; the step exists for an example when its output has at least
t - 1 tokens before EOS. Rows of examples whose output ended earlier are NaN with valid=False.

Speech: the truth is what transformers computes for an utterance alone, fed the feature
extractor's default output. For an odd filterbank frame count that output carries one masked pad
frame (``pad_to_multiple_of=2``): a lone run has width W = L + 1 for L valid frames (else W = L).
What a lone run computes there, and how a batch reproduces it for every example:
- conformer: the pad frame's input is zeroed, it is masked as an attention key and zeroed before
  the depthwise convolution, which is causal; so positions < W of a wider batch equal the lone
  run's, the pad frame's state included. (Attention runs ``sdpa``, pinned by the loader: eager
  attends padded frames, see ``engine.model.loader``.)
- adapter layer j: its strided convolutions read the lone run's states up to its width W_j,
  the pad frame's state included when a window reaches it (L % 8 < 4 for kernel = stride = 8),
  and zeros beyond (their padding). The recorder zeroes the convolution inputs beyond each
  example's W_j: a batch's extra positions read as that padding.
- adapter attention and the decoder's cross-attention: transformers masks keys beyond
  sub(L) = floor((L + 2 (k // 2) - k) / s) + 1, computed once from the feature mask for every
  adapter layer and for the decoder, and clipped by the lone run's width (all of it when sub(L)
  exceeds it). The recorder gives each example min(sub(L), lone width) in both places, so no
  position that exists only in the batch is ever attended.
- features are extracted per utterance exactly as alone, then right-padded with masked zero frames.
Valid positions pooled: at the conformer rate the L frames of the feature mask (the masked pad
frame is not part of the utterance); at adapter layer j the min(sub(L), W_{j+1}) outputs its own
attention treats as valid; cross-attention k/v over the positions the decoder attends to. One
case has no batched equivalent: with chunked attention and ``speech_encoder_left_chunk_num = 0`` a
pad frame that starts a chunk has no key to attend to; such an example in a wider batch is a
UserError (record it with batch_size 1).

Known limit: should greedy decoding emit the pad token mid-output, the teacher-forced pass would
give later tokens other sinusoidal positions than KV-cache decoding did (positions skip pads).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from engine.errors import UserError
from engine.model.catalog import Catalog, Component
from engine.model.hooks import hooked
from engine.model.loader import check_attention

DEFAULT_STEPS = (1, 6, 11)


@dataclass
class ModelInput:
    example_id: str
    lang: str
    modality: str  # "speech" | "text"
    tgt_lang: str
    text: str | None = None
    waveform: np.ndarray | None = None
    reference: str | None = None


ACTIVITIES = ("position", "prefix_mean")


@dataclass(frozen=True)
class RecordOptions:
    """How a record pass defines what it records, where the paper's text and its authors' code
    differ (``engine.pipeline.definitions``); the defaults are the paper's text.

    ``activities``: decoder activity at step t kept per example, any of ``"position"`` (the
    component's output at position t) and ``"prefix_mean"`` (its mean over positions 0..t, what
    one forward on the prefix of length t + 1 averages: the decoder is causal, so one pass gives
    every prefix). ``keep_short``: an output that ended before step t keeps a prefix mean over its
    whole sequence, EOS included, instead of having no step t. ``text_length``: text inputs padded
    to this many tokens, the pads inside every mean over encoder positions (0: none).
    ``default_source_tag``: text inputs tokenized as a freshly loaded tokenizer's ``encode`` does
    (``LoadedModel.encode_as_loaded``: SeamlessM4T's ``[</s>, __eng__, ...]``) instead of with their
    own ``__xx__`` tag. ``pool_masked``: every mean over encoder positions (encoder components,
    cross-attention k/v) runs over every position the example has alone, masked ones included
    (text pads up to ``text_length``, the masked pad frame of an odd-length utterance), as a mean
    that does not read the attention mask gives.
    """

    activities: tuple[str, ...] = ("position",)
    keep_short: bool = False
    text_length: int = 0
    default_source_tag: bool = False
    pool_masked: bool = False

    def __post_init__(self):
        bad = [a for a in self.activities if a not in ACTIVITIES]
        if not self.activities or bad:
            raise UserError(f"decoder activities {list(self.activities)} must be some of {list(ACTIVITIES)}")
        if self.keep_short and "prefix_mean" not in self.activities:
            raise UserError("keeping outputs that end before a step needs the prefix_mean activity: an output "
                            "that ended has no position t")


@dataclass
class BatchRecord:
    example_ids: list[str]
    langs: list[str]
    encoder: np.ndarray
    encoder_stack: str
    decoder: dict[int, np.ndarray]
    valid: dict[int, np.ndarray]
    output_ids: list[list[int]]
    output_text: list[str]
    modality: str = ""
    tgt_langs: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    #: ``{t: [B, N]}`` and ``{t: [B] bool}`` of the prefix_mean activity, when it was recorded
    prefix_mean: dict[int, np.ndarray] | None = None
    valid_prefix_mean: dict[int, np.ndarray] | None = None
    #: each example's encoder input length alone: feature frames (speech) or tokens (text)
    frames: list[int] = field(default_factory=list)


def task_of(modality: str, lang: str, tgt_lang: str) -> str:
    """S2T / ASR for speech, T2T / TR for text: same-language output means ASR or TR."""
    same = lang == tgt_lang
    if modality == "speech":
        return "ASR" if same else "S2T"
    if modality == "text":
        return "TR" if same else "T2T"
    raise UserError(f"modality '{modality}' is not 'speech' or 'text'")


def excluded_counts(records: Iterable[BatchRecord]) -> dict[str, dict[int, dict[str, int]]]:
    """Examples excluded from each step: ``{task: {step: {lang: count}}}`` (zeros included)."""
    out: dict[str, dict[int, dict[str, int]]] = {}
    for rec in records:
        for step, valid in rec.valid.items():
            for task, lang, ok in zip(rec.tasks, rec.langs, valid):
                per_lang = out.setdefault(task, {}).setdefault(int(step), {})
                per_lang[lang] = per_lang.get(lang, 0) + int(not ok)
    return out


def check_steps(steps: Sequence[int]) -> tuple[int, ...]:
    steps = tuple(int(s) for s in steps)
    if not steps or any(s < 1 for s in steps) or len(set(steps)) != len(steps):
        raise UserError(f"steps {steps} must be distinct integers >= 1 (step 1 is the language-tag position)")
    return steps


def modality_batches(inputs: Sequence[ModelInput], batch_size: int) -> Iterator[list[ModelInput]]:
    # a batch holds one modality (one encoder); order of inputs is preserved
    batch: list[ModelInput] = []
    for item in inputs:
        if batch and (len(batch) == batch_size or item.modality != batch[0].modality):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def masked_mean(x: torch.Tensor, channel_axis: int, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` (B, T) is 1 -> (B, C) float32."""
    if channel_axis == 1:
        x = x.transpose(1, 2)
    x = x[:, : mask.shape[1]]
    return torch.einsum("btc,bt->bc", x.float(), mask) / mask.sum(1, keepdim=True).clamp(min=1)


def _sub_sampled_lengths(model, lengths: torch.Tensor) -> torch.Tensor:
    """transformers' ``_compute_sub_sample_lengths_from_attention_mask`` on valid frame counts (B,).

    transformers applies it once to the feature mask, for every adapter layer's attention mask and
    for the decoder's cross-attention mask alike (it is not compounded over adapter layers), and
    uses ``kernel // 2`` as padding where the convolutions pad by ``stride // 2``: the result may
    exceed a layer's output width, where transformers' mask simply covers the whole width.
    """
    kernel, stride = model.config.adaptor_kernel_size, model.config.adaptor_stride
    pad = kernel // 2
    return torch.div(lengths + 2 * pad - kernel, stride, rounding_mode="floor") + 1


def _conv_widths(conv: torch.nn.Conv1d, widths: torch.Tensor) -> torch.Tensor:
    """Output width of ``conv`` for input widths (B,) (torch's Conv1d formula)."""
    (k,), (s,), (p,), (d,) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    return torch.div(widths + 2 * p - d * (k - 1) - 1, s, rounding_mode="floor") + 1


def length_mask(lengths: torch.Tensor, width: int, dtype=torch.float32) -> torch.Tensor:
    return (torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]).to(dtype)


@dataclass
class _SpeechGeometry:
    """What a lone run of each utterance sees, as per-example lengths (all int64 tensors (B,)).

    ``frames``: valid feature frames (the feature mask's ones). ``widths[j]``: the lone run's
    width at the input of adapter layer j (``widths[0]``: its feature width, ``frames`` plus the
    feature extractor's masked pad frame if any); ``widths[-1]``: the width of its encoder output.
    ``adapter_valid[j]``: keys adapter layer j's attention is given, min(sub-sampled length, its
    output width). ``cross_valid``: encoder positions the decoder attends to, min(sub-sampled
    length, output width).
    """

    frames: torch.Tensor
    widths: list[torch.Tensor]
    adapter_valid: list[torch.Tensor]
    cross_valid: torch.Tensor


def _speech_geometry(model, frames: torch.Tensor, lone_widths: torch.Tensor) -> _SpeechGeometry:
    adapter = model.speech_encoder.adapter
    sub = _sub_sampled_lengths(model, frames)
    widths, adapter_valid = [lone_widths], []
    for layer in (adapter.layers if adapter is not None else ()):
        # residual_conv and self_attn_conv are built alike: one output width
        widths.append(_conv_widths(layer.self_attn_conv, widths[-1]))
        adapter_valid.append(torch.minimum(sub, widths[-1]))
    return _SpeechGeometry(frames, widths, adapter_valid, torch.minimum(sub, widths[-1]))


def _check_chunk_rows(model, geometry: _SpeechGeometry, width: int, batch: list[ModelInput]) -> None:
    """UserError when a lone run's masked pad frame has no key to attend to and the batch is wider.

    With chunked attention and ``speech_encoder_left_chunk_num == 0`` a pad frame starting a new
    chunk sees only masked keys; attention then spreads evenly over every key of the row, which a
    wider batch holds more of, so no mask reproduces the lone result.
    """
    # v1 (SeamlessM4TModel) has no chunked speech attention: nothing to check
    size = getattr(model.config, "speech_encoder_chunk_size", None)
    left = getattr(model.config, "speech_encoder_left_chunk_num", -1)
    if size is None or left < 0:
        return
    last_pad = geometry.widths[0] - 1
    start = (torch.div(last_pad, size, rounding_mode="floor") - left).clamp(min=0) * size
    bad = (geometry.widths[0] > geometry.frames) & (start >= geometry.frames) & (geometry.widths[0] < width)
    for item, flag in zip(batch, bad.tolist()):
        if flag:
            raise UserError(
                f"speech example '{item.example_id}': its masked pad frame starts an attention chunk with no "
                f"valid frame (speech_encoder_left_chunk_num={left}), so batched recording cannot equal its "
                "lone encoding; record with batch_size 1")


def encode_inputs(lm, batch: list[ModelInput], options: RecordOptions = RecordOptions()
                  ) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Encoder inputs for ``batch``, the valid length of each example (encoder positions) and the
    width a lone run of each example has (text: its length, or ``options.text_length``)."""
    modality = batch[0].modality
    if modality == "text":
        rows = []
        for item in batch:
            if item.text is None:
                raise UserError(f"example '{item.example_id}' has modality text but no text")
            # the tokenizer prepends __lang__ and appends </s>; per example since src_lang differs.
            # The authors' encode(text) on a fresh tokenizer: its initial template, whatever the language
            rows.append(lm.encode_as_loaded(item.text) if options.default_source_tag
                        else list(lm.tokenizer(item.text, src_lang=item.lang)["input_ids"]))
        if options.text_length:
            long = [(item.example_id, len(r)) for item, r in zip(batch, rows) if len(r) > options.text_length]
            if long:
                raise UserError(f"example '{long[0][0]}' has {long[0][1]} tokens, more than definitions.text_length="
                                f"{options.text_length}; raise it (the authors' loader drops such sentences)")
        width = options.text_length or max(len(r) for r in rows)
        pad = lm.tokenizer.pad_token_id
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=lm.device)
        lengths = torch.tensor([len(r) for r in rows], device=lm.device)
        lone = torch.full_like(lengths, width) if options.text_length else lengths
        return {"input_ids": ids, "attention_mask": length_mask(lengths, width, torch.long)}, lengths, lone
    if modality == "speech":
        feats = []
        for item in batch:
            if item.waveform is None:
                raise UserError(f"example '{item.example_id}' has modality speech but no waveform")
            # each utterance exactly as the feature extractor gives it alone (its defaults, its
            # masked pad frame), then right-padded with masked zero frames into one batch
            wave = np.asarray(item.waveform, dtype=np.float32).reshape(-1)
            feats.append(lm.feature_extractor([wave], sampling_rate=16000, return_tensors="pt"))
        lone_widths = torch.tensor([f["input_features"].shape[1] for f in feats], device=lm.device)
        width = int(lone_widths.max())
        features = torch.zeros((len(batch), width, feats[0]["input_features"].shape[2]), dtype=lm.dtype,
                               device=lm.device)
        mask = torch.zeros((len(batch), width), dtype=torch.long, device=lm.device)
        for b, f in enumerate(feats):
            features[b, : f["input_features"].shape[1]] = f["input_features"][0].to(lm.device, lm.dtype)
            mask[b, : f["attention_mask"].shape[1]] = f["attention_mask"][0].to(lm.device)
        return {"input_features": features, "attention_mask": mask}, mask.sum(1), lone_widths
    raise UserError(f"modality '{modality}' is not 'speech' or 'text'")


class _Recorder:
    """The hooks of one batch, writing into preallocated float32 buffers."""

    def __init__(self, catalog: Catalog, stack: str, batch_size: int, steps: tuple[int, ...], device):
        self.catalog, self.stack_name, self.steps = catalog, stack, steps
        self.encoder = torch.full((batch_size, catalog.n_neurons(stack)), float("nan"), device=device)
        self.decoder = torch.full((batch_size, len(steps), catalog.n_neurons("text_decoder")), float("nan"),
                                  device=device)
        self.enc_mask: torch.Tensor | None = None  # (B, T) at the encoder component's rate
        self.adapter_masks: list[torch.Tensor] = []  # (B, T_j) valid outputs of adapter layer j
        self.cross_mask: torch.Tensor | None = None  # (B, T_enc) encoder positions seen by the decoder
        self.kv_mask: torch.Tensor | None = None  # (B, T_enc) encoder positions cross-attention k/v are pooled over
        self.prefix: torch.Tensor | None = None  # (B, S, N) prefix means, when asked for
        self.frames: list[int] = []  # each example's encoder input length alone
        self.fired: set[str] = set()

    def encoder_hooks(self) -> dict:
        hooks = {}
        for comp in self.catalog.group(self.stack_name):
            hooks[comp.path] = self._pool_hook(comp)
        return hooks

    def _mask(self, comp: Component, width: int) -> torch.Tensor:
        """The positions an encoder component is pooled over, at its own rate; ``width``: the
        positions its hooked output has.

        ``adapter_pooled``: adapter layer j's outputs, ``adapter_masks[j]``; ``adapter_in_pooled``: its
        input, the previous layer's outputs (layer 0: the conformer's frames); ``final_pooled``: the
        adapter's output (no adapter: the frames); ``relative_pooled``: v1's relative-position rows,
        ``2 T - 1`` for T frames, row k holding relative position T - 1 - k: the rows between the
        example's n pooled frames, |T - 1 - k| < n; otherwise the frames, ``enc_mask``."""
        if comp.position in ("adapter_pooled", "adapter_in_pooled"):  # name "adapter.layers.{j}. ..."
            j = int(comp.name.split(".")[2])
            if comp.position == "adapter_pooled":
                return self.adapter_masks[j]
            return self.adapter_masks[j - 1] if j else self.enc_mask  # the layer's input: the one before
        if comp.position == "final_pooled":  # after the adapter
            return self.adapter_masks[-1] if self.adapter_masks else self.enc_mask
        if comp.position == "relative_pooled":
            frames = (width + 1) // 2
            n = self.enc_mask[:, :frames].sum(1).round().long()[:, None]
            k = torch.arange(width, device=n.device)[None, :]
            return ((k >= frames - n) & (k < frames + n - 1)).float()
        return self.enc_mask

    def _pool_hook(self, comp: Component):
        def hook(module, inputs, output):
            x = output[0] if isinstance(output, tuple) else output
            mask = self._mask(comp, x.shape[2] if comp.channel_axis == 1 else x.shape[1])
            if comp.position == "relative_pooled":  # one row for the whole batch: the table is not per example
                x = x.expand(mask.shape[0], *x.shape[1:])
            self.encoder[:, comp.offset: comp.offset + comp.dim] = masked_mean(x, comp.channel_axis, mask)
            self.fired.add(comp.path)
        return hook

    def decoder_hooks(self, activities=("position",), ends: torch.Tensor | None = None) -> dict:
        """Hooks that write each decoder component into ``self.decoder`` (the output at position t,
        when ``"position"`` is asked for) and ``self.prefix`` (its mean over positions 0..t, or
        over 0..``ends[b]`` where an example's sequence ends earlier, for ``"prefix_mean"``)."""
        positions = list(self.steps)
        if "prefix_mean" in activities:
            self.prefix = torch.full_like(self.decoder, float("nan"))
            steps = torch.tensor(positions, device=self.decoder.device)
            last = steps[None, :] if ends is None else torch.minimum(steps[None, :], ends[:, None])  # (B, S)
        hooks = {}
        for comp in self.catalog.group("text_decoder"):
            sl = slice(comp.offset, comp.offset + comp.dim)
            if comp.position == "step_invariant":
                def hook(module, inputs, output, sl=sl, comp=comp):
                    pooled = masked_mean(output, comp.channel_axis, self.kv_mask)
                    for buffer in self._buffers(activities):
                        buffer[:, :, sl] = pooled[:, None, :]
                    self.fired.add(comp.path)
            else:
                def hook(module, inputs, output, sl=sl, comp=comp):
                    x = output.transpose(1, 2) if comp.channel_axis == 1 else output
                    if "position" in activities:
                        self.decoder[:, :, sl] = x[:, positions, :].float()
                    if "prefix_mean" in activities:
                        sums = x.float().cumsum(1)  # (B, W, C): sums[:, p] = positions 0..p
                        idx = last.expand(x.shape[0], -1)
                        picked = torch.gather(sums, 1, idx[:, :, None].expand(-1, -1, sums.shape[2]))
                        self.prefix[:, :, sl] = picked / (idx[:, :, None] + 1).float()
                    self.fired.add(comp.path)
            hooks[comp.path] = hook
        return hooks

    def _buffers(self, activities) -> list[torch.Tensor]:
        return ([self.decoder] if "position" in activities else []) + \
               ([self.prefix] if "prefix_mean" in activities else [])


def _adapter_padding_hooks(model, geometry: _SpeechGeometry) -> dict:
    """Zero adapter layer j's convolution inputs beyond each example's lone width there (the zeros
    the convolution pads a lone run with), so every window a lone run has reads what it reads."""
    adapter = model.speech_encoder.adapter
    if adapter is None:
        return {}
    hooks = {}
    for j, _ in enumerate(adapter.layers):
        def zero_beyond(module, inputs, output, lone=geometry.widths[j]):
            keep = length_mask(lone, output.shape[1], torch.bool)
            return output.masked_fill(~keep[:, :, None], 0.0)
        for name in ("residual_layer_norm", "self_attn_layer_norm"):
            hooks[f"speech_encoder.adapter.layers.{j}.{name}"] = zero_beyond
    return hooks


def _then(first, second):
    """One forward hook running ``first`` (which may replace the output) and then ``second`` on it."""
    def hook(module, inputs, output):
        replaced = first(module, inputs, output)
        output = output if replaced is None else replaced
        second(module, inputs, output)
        return replaced
    return hook


def _adapter_attention_masks(model, geometry: _SpeechGeometry) -> dict:
    """Pre-hooks (``hooks.hooked``'s ``kw_pre_hooks``) that give adapter layer j's attention the
    keys a lone run gives it, ``adapter_valid[j]``.

    transformers derives them from the batch's feature mask as the sub-sampled length, which can
    exceed an example's lone output width (kernel > stride); the positions beyond it exist only in
    the batch and must stay masked.
    """
    from transformers.masking_utils import create_bidirectional_mask

    adapter = model.speech_encoder.adapter
    hooks = {}
    for j, (layer, valid) in enumerate(zip(adapter.layers if adapter is not None else (), geometry.adapter_valid)):
        def replace(module, args, kwargs, valid=valid, config=layer.config):
            hidden = args[0] if args else kwargs["hidden_states"]
            keys = length_mask(valid, hidden.shape[1], torch.bool)
            kwargs["attention_mask"] = create_bidirectional_mask(config=config, inputs_embeds=hidden,
                                                                 attention_mask=keys)
            return args, kwargs
        hooks[f"speech_encoder.adapter.layers.{j}.self_attn"] = replace
    return hooks


def _encode(lm, catalog: Catalog, rec: _Recorder, batch: list[ModelInput], options: RecordOptions = RecordOptions()):
    """Run the encoder once with pooling hooks; return (encoder states, decoder-side encoder mask).

    Sets ``rec.frames`` (each example's lone input width) and, with ``options.pool_masked``, pools
    over every position of each example's lone run instead of its valid ones."""
    model = lm.model
    enc_inputs, lengths, lone_widths = encode_inputs(lm, batch, options)
    modality = batch[0].modality
    width = enc_inputs["attention_mask"].shape[1]
    rec.frames = [int(w) for w in lone_widths.tolist()]
    rec.enc_mask = length_mask(lone_widths if options.pool_masked else lengths, width)
    if modality == "speech":
        geometry = _speech_geometry(model, lengths, lone_widths)
        _check_chunk_rows(model, geometry, width, batch)
        hooks = _adapter_padding_hooks(model, geometry)
        for path, pool in rec.encoder_hooks().items():
            # a module both zeroed and recorded (the authors' set holds the adapter's input norms):
            # recorded after the zeroing, which only touches positions its mask leaves out anyway
            hooks[path] = _then(hooks[path], pool) if path in hooks else pool
        n_out = torch.tensor([width], device=lengths.device)
        adapter = model.speech_encoder.adapter
        for j, layer in enumerate(adapter.layers if adapter is not None else ()):
            n_out = _conv_widths(layer.self_attn_conv, n_out)
            pooled = geometry.widths[j + 1] if options.pool_masked else geometry.adapter_valid[j]
            rec.adapter_masks.append(length_mask(pooled, int(n_out)))
        with hooked(model, hooks, kw_pre_hooks=_adapter_attention_masks(model, geometry)):
            states = model.speech_encoder(input_features=enc_inputs["input_features"],
                                          attention_mask=enc_inputs["attention_mask"]).last_hidden_state
        cross_mask = length_mask(geometry.cross_valid, states.shape[1])
        if options.pool_masked:  # cross-attention k/v over every encoder output of the lone run
            rec.kv_mask = length_mask(geometry.widths[-1], states.shape[1])
    else:
        with hooked(model, rec.encoder_hooks()):
            states = model.text_encoder(input_ids=enc_inputs["input_ids"],
                                        attention_mask=enc_inputs["attention_mask"]).last_hidden_state
        cross_mask = length_mask(lengths, width)
        if options.pool_masked:
            rec.kv_mask = rec.enc_mask
    return states, cross_mask


def greedy(lm, states: torch.Tensor, cross_mask: torch.Tensor, tags: list[int], max_new_tokens: int
            ) -> torch.Tensor:
    """transformers' greedy ``generate`` on precomputed encoder states -> sequences (B, 2 + n).

    ``cross_mask`` (B, T_enc) is the decoder's cross-attention mask, as the teacher-forced pass
    gets it. SeamlessM4Tv2Model.forward passes its ``attention_mask`` to the decoder unchanged when
    its modality is text (for speech it would re-derive one from a feature mask), so text is set.
    """
    from transformers import GenerationMixin
    from transformers.modeling_outputs import BaseModelOutput

    model = lm.model
    model.set_modality("text")
    decoder_input_ids = torch.tensor([[tag] for tag in tags], device=lm.device)
    out = GenerationMixin.generate(
        model, encoder_outputs=BaseModelOutput(last_hidden_state=states), attention_mask=cross_mask.long(),
        decoder_input_ids=decoder_input_ids, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
        num_return_sequences=1, return_dict_in_generate=False, output_scores=False, output_hidden_states=False,
    )
    return out.sequences if hasattr(out, "sequences") else out


def step_rows(decoder: np.ndarray, steps, outputs) -> tuple[dict, dict]:
    """Split ``decoder`` [B, len(steps), N] per step: ``({t: valid [B] bool}, {t: rows [B, N]})``.
    Step t exists for an example whose output has at least t - 1 tokens; rows where it does not
    are NaN."""
    valid, rows = {}, {}
    for k, t in enumerate(steps):
        ok = np.array([len(ys) >= t - 1 for ys in outputs], dtype=bool)
        block = decoder[:, k, :].copy()
        block[~ok] = np.nan
        valid[t], rows[t] = ok, block
    return valid, rows


def _strip(tokens: Sequence[int], eos: int, pad: int) -> list[int]:
    """Output tokens before the first EOS (generate pads finished rows with pad after EOS)."""
    out = []
    for tok in tokens:
        if tok == eos:
            break
        out.append(int(tok))
    return out


@torch.no_grad()
def record_batches(lm, catalog: Catalog, inputs: Sequence[ModelInput], *, steps: Sequence[int] = DEFAULT_STEPS,
                   batch_size: int = 8, prefix: str = "greedy", max_new_tokens: int | None = None,
                   options: RecordOptions = RecordOptions()) -> Iterator[BatchRecord]:
    """Record ``inputs`` batch by batch (consecutive inputs of one modality, at most ``batch_size``).

    Yields one ``BatchRecord`` per batch: ``encoder`` [B, n_neurons(encoder stack)] and
    ``decoder[t]`` [B, n_neurons("text_decoder")] float32 in catalog order. ``prefix="greedy"``
    decodes greedily for ``max_new_tokens`` (default ``max(steps)``: the tokens steps need) new
    tokens after the language tag; ``prefix="gold"`` teacher-forces each input's ``reference``.
    Only one batch of activations is alive at a time. ``options`` (``RecordOptions``): which decoder
    activities, and the text inputs, where the paper's text and its authors' code differ.
    """
    for (record,) in record_shared_encoder(lm, catalog, [inputs], steps=steps, batch_size=batch_size,
                                           prefix=prefix, max_new_tokens=max_new_tokens, options=options):
        yield record


def _check_shared(batch: list[ModelInput], other: list[ModelInput]) -> None:
    for a, b in zip(batch, other):
        same = (a.modality == b.modality and a.lang == b.lang
                and (a.text == b.text if a.modality == "text" else
                     a.waveform is b.waveform or np.array_equal(a.waveform, b.waveform)))
        if not same:
            raise UserError(f"examples '{a.example_id}' and '{b.example_id}' cannot share one encoder pass: "
                            "their encoder inputs (modality, language, text or audio) differ")


@torch.no_grad()
def record_shared_encoder(lm, catalog: Catalog, inputs_per_task: Sequence[Sequence[ModelInput]], *,
                          steps: Sequence[int] = DEFAULT_STEPS, batch_size: int = 8, prefix: str = "greedy",
                          max_new_tokens: int | None = None, options: RecordOptions = RecordOptions()
                          ) -> Iterator[tuple[BatchRecord, ...]]:
    """Record tasks that feed the same encoder inputs (S2T and ASR), running the encoder once.

    ``inputs_per_task[j][i]`` is example ``i`` of task ``j``; for every ``i`` all tasks must
    have the same encoder input (modality, language, and text or waveform; UserError
    otherwise) and may differ in ``tgt_lang``, ``reference`` and ``example_id``. Batches follow
    ``inputs_per_task[0]`` as in ``record_batches``. Yields per batch one ``BatchRecord`` per
    task, in task order; they share one ``encoder`` array (the same object), and every record
    is bit for bit what ``record_batches`` gives that task alone: the encoder pass is the same
    computation on the same batch, and each task's decoder runs on its own, as it would there.
    """
    steps = check_steps(steps)
    check_attention(lm.model)
    if prefix not in ("greedy", "gold"):
        raise UserError(f"prefix '{prefix}' is not 'greedy' or 'gold'")
    if batch_size < 1:
        raise UserError(f"batch_size {batch_size} must be >= 1")
    if not inputs_per_task or any(len(task) != len(inputs_per_task[0]) for task in inputs_per_task):
        raise UserError("tasks sharing an encoder need the same number of examples, aligned row by row")
    model = lm.model
    n_new = max(steps) if max_new_tokens is None else int(max_new_tokens)
    start = int(model.generation_config.decoder_start_token_id)
    eos = lm.tokenizer.eos_token_id
    pad = lm.tokenizer.pad_token_id
    offset = 0
    for first in modality_batches(inputs_per_task[0], batch_size):
        batches = [first] + [list(task[offset: offset + len(first)]) for task in inputs_per_task[1:]]
        offset += len(first)
        for other in batches[1:]:
            _check_shared(first, other)
        modality = first[0].modality
        stack = "speech_encoder" if modality == "speech" else "text_encoder"
        rec = _Recorder(catalog, stack, len(first), steps, lm.device)
        states, cross_mask = _encode(lm, catalog, rec, first, options)
        rec.cross_mask = cross_mask
        if rec.kv_mask is None:
            rec.kv_mask = cross_mask
        encoder = rec.encoder.cpu().numpy()
        records = []
        for j, batch in enumerate(batches):
            if j:  # a fresh decoder buffer: the previous task's record must not be overwritten
                rec.decoder = torch.full_like(rec.decoder, float("nan"))
            records.append(_decode(lm, rec, states, batch, encoder, steps=steps, prefix=prefix,
                                   n_new=n_new, start=start, eos=eos, pad=pad, options=options))
        yield tuple(records)


def _decode(lm, rec: _Recorder, states, batch: list[ModelInput], encoder: np.ndarray, *,
            steps, prefix: str, n_new: int, start: int, eos: int, pad: int,
            options: RecordOptions = RecordOptions()) -> BatchRecord:
    """The decoder side of one batch on its precomputed encoder ``states``: prefix, then the
    teacher-forced pass recording ``steps``."""
    model = lm.model
    modality = batch[0].modality
    cross_mask = rec.cross_mask
    tags = [lm.lang_token_id(item.tgt_lang) for item in batch]
    if prefix == "greedy":
        sequences = greedy(lm, states, cross_mask, tags, n_new).tolist()
        outputs = [_strip(seq[2:], eos, pad) for seq in sequences]
        ended = [eos in seq[2:] for seq in sequences]
    else:
        outputs = []
        for item in batch:
            if item.reference is None:
                raise UserError(f"prefix 'gold' needs a reference for example '{item.example_id}'")
            outputs.append(list(lm.tokenizer(item.reference, add_special_tokens=False)["input_ids"]))
        ended = [True] * len(outputs)
    # positions 0..max(steps): [start, tag, y1 .. y_{max-1}] (and the EOS of an output that ended,
    # when short outputs are kept: the authors' prefix of it includes its EOS), right-padded
    width = max(steps) + 1
    rows, ends = [], []
    for tag, ys, done in zip(tags, outputs, ended):
        row = ([start, tag] + ys + ([eos] if options.keep_short and done else []))[:width]
        ends.append(len(row) - 1)
        rows.append(row + [pad] * (width - len(row)))
    dec_in = torch.tensor(rows, device=lm.device)
    ends_t = torch.tensor(ends, device=lm.device) if options.keep_short else None
    with hooked(model, rec.decoder_hooks(options.activities, ends_t)):
        model.text_decoder(input_ids=dec_in, encoder_hidden_states=states, encoder_attention_mask=cross_mask,
                           use_cache=False)
    valid, dec_out = step_rows(rec.decoder.cpu().numpy(), steps, outputs)
    record = BatchRecord(
        example_ids=[item.example_id for item in batch], langs=[item.lang for item in batch],
        encoder=encoder, encoder_stack=rec.stack_name, decoder=dec_out if "position" in options.activities else {},
        valid=valid, output_ids=outputs, output_text=lm.tokenizer.batch_decode(outputs, skip_special_tokens=True),
        modality=modality, tgt_langs=[item.tgt_lang for item in batch],
        tasks=[task_of(modality, item.lang, item.tgt_lang) for item in batch], frames=list(rec.frames),
    )
    if "prefix_mean" in options.activities:
        kept = [[0] * (max(steps) - 1)] * len(outputs) if options.keep_short else outputs  # every step exists
        record.valid_prefix_mean, record.prefix_mean = step_rows(rec.prefix.cpu().numpy(), steps, kept)
    return record
