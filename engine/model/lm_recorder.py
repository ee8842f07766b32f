"""Record every catalog neuron of a speech LLM (engine.model.speech_llm) per example.

Per batch (one modality; each example's task is read from its languages, engine.model.recorder.task_of):
1. the prompt: the example's audio or sentence, then its task's instruction, through the
   processor's own chat template and call, left-padded as the processor pads (width P);
2. the prefix: transformers' greedy ``generate`` on those inputs (KV cache), or the gold reference;
3. one teacher-forced forward of the base model (no output projection) over
   ``[prompt, y1, ..., y_{max(steps)-1}]`` with the position ids ``generate`` derives from the
   attention mask (its cumulative sum; see
   ``GenerationMixin._prepare_position_ids_for_generation``). Its hooks keep, for every step t,
   column ``P - 2 + t`` of each LM component: the position whose output predicts y_t (t = 1 is
   the last prompt position). The same pass pools the stack of the input: audio encoder layers
   and projector over the utterance's valid frames (speech), the token embedding over the
   prompt's non-padding tokens (text).

A step exists for an example when its output has at least t - 1 tokens before an end token
(the generation config's ``eos_token_id``, one id or several); rows of steps that do not exist
are NaN with valid=False, as for SeamlessM4T.

An utterance longer than one encoder window (``Family.max_audio_s``, 30 s) is a UserError naming
it: Qwen2-Audio's feature extractor would cut it, and Voxtral would split it into windows whose
frames are no longer one utterance's.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from engine.errors import UserError
from engine.model.catalog import Catalog
from engine.model.hooks import hooked
from engine.model.recorder import (
    DEFAULT_STEPS,
    BatchRecord,
    ModelInput,
    RecordOptions,
    check_steps,
    length_mask,
    masked_mean,
    modality_batches,
    step_rows,
    task_of,
)
from engine.model.speech_llm import family
from engine.science.languages import get_language

HOP = 160  # samples per feature frame of the Whisper feature extractor both families use


def instruction_for(lm, item: ModelInput) -> str:
    """The instruction of ``item``'s task (``lm.instructions``), ``{target}`` filled with the
    English name of its target language."""
    task = task_of(item.modality, item.lang, item.tgt_lang)
    return lm.instructions[task].format(target=get_language(item.tgt_lang).name)


def end_tokens(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None}


def prompt_inputs(lm, batch: Sequence[ModelInput]):
    """The processor's left-padded inputs for ``batch`` (tensors on ``lm.device``)."""
    fam = family(lm.model.config)
    for item in batch:
        if item.modality == "speech":
            if item.waveform is None:
                raise UserError(f"example '{item.example_id}' has modality speech but no waveform")
            seconds = np.asarray(item.waveform).size / 16000
            if seconds > fam.max_audio_s:
                raise UserError(f"speech example '{item.example_id}' lasts {seconds:.1f} s, longer than the "
                                f"{fam.max_audio_s:g} s window of {fam.model_type}'s audio encoder; drop it or "
                                "cut it before recording")
        elif item.text is None:
            raise UserError(f"example '{item.example_id}' has modality text but no text")
    inputs = fam.build_prompts(lm.processor, list(batch), [instruction_for(lm, item) for item in batch])
    mask = inputs["attention_mask"]
    if bool((mask[:, -1] == 0).any()):
        raise UserError(f"the processor of {lm.model_id} pads on the right; speech-LLM prompts must be "
                        "left-padded so every prompt ends at the same column")
    out = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.to(lm.device)
            if value.is_floating_point():
                value = value.to(lm.dtype)
        out[key] = value
    return out


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Position ids as ``generate`` derives them from a 2-D attention mask (padding reads 0)."""
    ids = mask.long().cumsum(-1) - 1
    return ids.masked_fill(mask == 0, 0)


def _valid_frames(batch: Sequence[ModelInput], device) -> torch.Tensor:
    # the Whisper feature extractor's mask covers ceil(samples / hop) frames of each utterance
    samples = torch.tensor([np.asarray(item.waveform).size for item in batch], device=device)
    return torch.div(samples + HOP - 1, HOP, rounding_mode="floor")


class _Hooks:
    """The hooks of one batch, writing into preallocated float32 buffers."""

    def __init__(self, catalog: Catalog, stack: str, n: int, steps: tuple[int, ...], device):
        self.catalog, self.stack, self.steps, self.n = catalog, stack, steps, n
        self.encoder = torch.full((n, catalog.n_neurons(stack)), float("nan"), device=device)
        self.decoder = torch.full((n, len(steps), catalog.n_neurons("text_decoder")), float("nan"), device=device)
        self.masks: dict[str, torch.Tensor] = {}  # component position kind -> (B, T) valid mask
        self.columns: list[int] = []
        self.fired: set[str] = set()

    def _pool(self, comp):
        def hook(module, inputs, output):
            x = output[0] if isinstance(output, tuple) else output
            if x.dim() == 2:  # Voxtral's projector runs on (B * positions, C)
                x = x.reshape(self.n, -1, x.shape[-1])
            mask = self.masks[comp.position]
            self.encoder[:, comp.offset: comp.offset + comp.dim] = masked_mean(x, -1, mask)
            self.fired.add(comp.path)
        return hook

    def _step(self, comp):
        sl = slice(comp.offset, comp.offset + comp.dim)

        def hook(module, inputs, output):
            x = inputs[0] if comp.reads == "input" else (output[0] if isinstance(output, tuple) else output)
            self.decoder[:, :, sl] = x[:, self.columns, :].float()
            self.fired.add(comp.path)
        return hook

    def hooks(self) -> dict:
        # one hook per module: the LM's mlp.down_proj is read twice (its input and its output)
        by_path: dict[str, list] = {}
        for comp in self.catalog.group(self.stack):
            by_path.setdefault(comp.path, []).append(self._pool(comp))
        for comp in self.catalog.group("text_decoder"):
            by_path.setdefault(comp.path, []).append(self._step(comp))

        def chain(fns):
            def hook(module, inputs, output):
                for fn in fns:
                    fn(module, inputs, output)
            return hook
        return {path: fns[0] if len(fns) == 1 else chain(fns) for path, fns in by_path.items()}


def greedy(lm, inputs: dict, max_new_tokens: int) -> torch.Tensor:
    """New tokens of transformers' greedy ``generate`` on the prompt inputs -> (B, n <= max_new_tokens)."""
    out = lm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                            num_return_sequences=1, return_dict_in_generate=False, output_scores=False,
                            output_hidden_states=False)
    sequences = out.sequences if hasattr(out, "sequences") else out
    return sequences[:, inputs["input_ids"].shape[1]:]


def _until_end(rows, ends) -> list[list[int]]:
    outputs = []
    for row in rows:
        ys = []
        for tok in row:
            if tok in ends:
                break
            ys.append(int(tok))
        outputs.append(ys)
    return outputs


@torch.no_grad()
def greedy_outputs(lm, inputs: Sequence[ModelInput], *, batch_size: int = 8, max_new_tokens: int = 256
                   ) -> list[tuple[list[int], str]]:
    """(output ids before the end token, decoded text) of each input, by the same prompts and
    greedy ``generate`` as :func:`record_batches`, without the recording pass (steering)."""
    out = []
    ends = end_tokens(lm.model)
    for batch in modality_batches(list(inputs), batch_size):
        ids = _until_end(greedy(lm, prompt_inputs(lm, batch), max_new_tokens).tolist(), ends)
        out += list(zip(ids, lm.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)))
    return out


@torch.no_grad()
def record_batches(lm, catalog: Catalog, inputs: Sequence[ModelInput], *, steps: Sequence[int] = DEFAULT_STEPS,
                   batch_size: int = 8, prefix: str = "greedy", max_new_tokens: int | None = None
                   ) -> Iterator[BatchRecord]:
    """Record ``inputs`` batch by batch, as ``engine.model.recorder.record_batches`` does for SeamlessM4T.

    Yields one ``BatchRecord`` per batch of consecutive inputs of one modality: ``encoder``
    [B, n_neurons(speech_encoder or text_encoder)] and ``decoder[t]`` [B, n_neurons("text_decoder")],
    float32 in catalog order. ``prefix="greedy"`` decodes ``max_new_tokens`` (default
    ``max(steps)``) new tokens; ``"gold"`` teacher-forces each input's ``reference``.
    """
    steps = check_steps(steps)
    if prefix not in ("greedy", "gold"):
        raise UserError(f"prefix '{prefix}' is not 'greedy' or 'gold'")
    if batch_size < 1:
        raise UserError(f"batch_size {batch_size} must be >= 1")
    model = lm.model
    fam = family(model.config)
    n_new = max(steps) if max_new_tokens is None else int(max_new_tokens)
    ends = end_tokens(model)
    pad = lm.processor.tokenizer.pad_token_id
    for batch in modality_batches(list(inputs), batch_size):
        modality = batch[0].modality
        stack = "speech_encoder" if modality == "speech" else "text_encoder"
        enc = prompt_inputs(lm, batch)
        mask, width = enc["attention_mask"], enc["input_ids"].shape[1]
        if prefix == "greedy":
            outputs = _until_end(greedy(lm, enc, n_new).tolist(), ends)
        else:
            outputs = []
            for item in batch:
                if item.reference is None:
                    raise UserError(f"prefix 'gold' needs a reference for example '{item.example_id}'")
                outputs.append(list(lm.processor.tokenizer(item.reference, add_special_tokens=False)["input_ids"]))
        extra = max(steps) - 1
        tail = torch.tensor([(ys + [pad] * extra)[:extra] for ys in outputs], dtype=torch.long,
                            device=lm.device).reshape(len(batch), extra)
        ids = torch.cat([enc["input_ids"], tail], dim=1)
        full_mask = torch.cat([mask, torch.ones_like(tail)], dim=1)
        rec = _Hooks(catalog, stack, len(batch), steps, lm.device)
        rec.columns = [width - 2 + t for t in steps]
        if modality == "speech":
            frames = _valid_frames(batch, lm.device)
            if "feature_attention_mask" in enc and not torch.equal(enc["feature_attention_mask"].sum(-1), frames):
                raise RuntimeError("feature frames differ from the feature extractor's mask")
            encoder_frames = (frames - 1) // 2 + 1
            n_enc = int(model.config.audio_config.max_source_positions)
            rec.masks["encoder_pooled"] = length_mask(encoder_frames, n_enc)
            projected = fam.projector_valid(encoder_frames)
            rec.masks["projector_pooled"] = length_mask(projected, int(fam.projector_valid(torch.tensor(n_enc))))
        else:
            rec.masks["prompt_pooled"] = mask.float()
        forward = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
        # the base model (audio tower, projector, LM layers) without the output projection: the
        # logits of every position, the pass's largest product, are not recorded
        with hooked(model, rec.hooks()):
            model.base_model(input_ids=ids, attention_mask=full_mask, position_ids=position_ids(full_mask),
                             use_cache=False, **forward)
        missing = {c.path for c in catalog.group(stack)} - rec.fired
        if missing:
            raise RuntimeError(f"components never ran: {sorted(missing)[:3]}")
        encoder = rec.encoder.cpu().numpy()
        valid, dec_out = step_rows(rec.decoder.cpu().numpy(), steps, outputs)
        yield BatchRecord(
            example_ids=[item.example_id for item in batch], langs=[item.lang for item in batch],
            encoder=encoder, encoder_stack=stack, decoder=dec_out, valid=valid, output_ids=outputs,
            output_text=lm.processor.tokenizer.batch_decode(outputs, skip_special_tokens=True),
            modality=modality, tgt_langs=[item.tgt_lang for item in batch],
            tasks=[task_of(modality, item.lang, item.tgt_lang) for item in batch],
        )


@torch.no_grad()
def record_shared_encoder(lm, catalog: Catalog, inputs_per_task: Sequence[Sequence[ModelInput]], *,
                          steps: Sequence[int] = DEFAULT_STEPS, batch_size: int = 8, prefix: str = "greedy",
                          max_new_tokens: int | None = None, options: RecordOptions = RecordOptions()
                          ) -> Iterator[tuple[BatchRecord, ...]]:
    """``engine.model.recorder.record_shared_encoder``'s interface for a speech LLM.

    A speech LLM has no encoder pass to share: the instruction is part of the LM's input, so each
    task is a prompt of its own. The audio encoder and projector see the same audio in S2T and
    ASR, so their pooled values agree to rounding; the record stage stores the first task's.
    ``options``: only the paper's text's (``RecordOptions()``): the authors' definitions of what is
    recorded are their code's, written for SeamlessM4T (the pipeline refuses them at preflight).
    """
    if options != RecordOptions():
        raise UserError(f"a speech LLM records by the paper's text; {options} is defined for SeamlessM4T only")
    if not inputs_per_task or any(len(task) != len(inputs_per_task[0]) for task in inputs_per_task):
        raise UserError("tasks sharing an encoder need the same number of examples, aligned row by row")
    streams = [record_batches(lm, catalog, task, steps=steps, batch_size=batch_size, prefix=prefix,
                              max_new_tokens=max_new_tokens) for task in inputs_per_task]
    yield from zip(*streams)
