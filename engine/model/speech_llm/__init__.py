"""The second model shape: speech LLMs, an audio encoder and a projector feeding a decoder-only LM.

The paper studies SeamlessM4T v2, an encoder-decoder whose text decoder is shared by speech and
text inputs. A speech LLM shares its language model the same way: the projector writes the
audio encoder's frames into the LM's input sequence in place of audio placeholder tokens, and a
text input is read by the same LM. Each family is one module of this package that fills a
:class:`Family` (module paths, component tables, the checkpoint's pinned config, how a prompt is
built); a third family (Granite Speech, Phi-4-multimodal) is one more such module listed in
``FAMILIES``.

How the paper's three stacks map onto this shape (the stack names are kept, so every stage,
artifact and claim reads them unchanged):

- ``speech_encoder``: the audio encoder's layers, then the projector (reported as one layer
  after the last encoder layer). Mean-pooled over the utterance's valid frames at each
  component's own rate, as for SeamlessM4T's speech encoder.
- ``text_encoder``: a decoder-only LM has no text encoder; its text-side counterpart of the
  projector's output is the token embedding (``embed_tokens``), mean-pooled over the prompt's
  non-padding tokens. The LM's layers are *not* pooled over input positions: they are read only
  at the decoding steps, so speech and text inputs are compared at the same kind of position.
- ``text_decoder``: the LM's layers, read at decoding steps.

Steps: step t is the generation of the t-th new token, read at the position that predicts it:
t = 1 is the last prompt position (the assistant turn's opening, after the chat template's
generation prompt), t = 6 the position of the 5th generated token. In SeamlessM4T step 1 is the
language-tag position, where the output language is fixed by a forced token; here nothing is
forced, so step 1 is where the model itself commits to the first answer token, and an
instruction-tuned model's preamble ("Sure, here is ...") would shift what steps 6 and 11 read.
The record stage keeps the tokens each step predicted (``output_text`` per example), so a reader
can see which tokens steps 1, 6 and 11 were.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

#: config.model_type -> the module of engine.model.speech_llm that describes the family
FAMILIES = {"qwen2_audio": "qwen2_audio", "voxtral": "voxtral"}


@dataclass(frozen=True)
class Family:
    """What the generic speech-LLM code needs to know about one family.

    Widths in the component tables are callables of the model's config. ``rate`` of an audio
    component says which valid-frame count pools it: ``"encoder"`` (the encoder layers' rate,
    after the stride-2 convolution) or ``"projector"`` (the projector's input rate).
    """

    model_type: str
    class_name: str                # transformers class building the whole model
    checkpoint: str                # the Hub id of the checkpoint the pinned config describes
    checkpoint_config: Callable    # () -> that checkpoint's config, built without weights
    config_source: str             # where the pinned values come from (public, citable)
    audio_layers: str              # module path of the audio encoder's layer list
    audio_components: tuple        # (name, width(config), channel axis)
    projector: tuple               # (module path, width(config), channel axis)
    lm_layers: str                 # module path of the LM's layer list
    lm: str                        # module path of the LM (the "text_decoder" stack's module)
    embed: str                     # module path of the LM's token embedding
    lm_components: tuple           # (name, width(config), channel axis, kind): kind "output" | "input"
    projector_valid: Callable      # (valid encoder frames (B,) LongTensor) -> valid projector positions
    audio_token_id: Callable       # (config) -> the audio placeholder token id
    languages: tuple               # ISO 639-3 codes the checkpoint documents
    build_prompts: Callable        # (processor, items, instructions) -> BatchFeature, left-padded
    max_audio_s: float = 30.0      # longest utterance one encoder window holds


def family_names() -> tuple[str, ...]:
    return tuple(FAMILIES)


def is_speech_llm(config) -> bool:
    return getattr(config, "model_type", None) in FAMILIES


def family(config_or_type) -> Family:
    """The :class:`Family` of a config (or a ``model_type`` string); KeyError if not a speech LLM."""
    model_type = config_or_type if isinstance(config_or_type, str) else getattr(config_or_type, "model_type", None)
    return importlib.import_module(f"engine.model.speech_llm.{FAMILIES[model_type]}").FAMILY
