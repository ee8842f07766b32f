"""What speech-LLM families share: the component tables of a Whisper-style audio encoder layer and
of a Llama-style LM layer, and prompts built with a processor's own chat template.

LM MLP: ``down_proj(act(gate_proj(x)) * up_proj(x))``. Its intermediate neurons are the input
of ``down_proj`` (``mlp.intermediate``), the product that the output projection reads, one
neuron per channel. ``gate_proj`` and ``up_proj`` are left out: they are the two factors of
those same channels, and counting them would count each intermediate neuron three times (and
steering one factor is not steering the neuron). Left out too, having no neuron dimension of
their own: the audio encoder's front-end convolutions and position table and the LM's rotary
embedding (functions of position only), the final norms outside the layers (the paper's table
is per layer), and ``lm_head`` (the vocabulary's logits, not neurons).
"""
from __future__ import annotations

import numpy as np


def _d_audio(c):
    return int(c.audio_config.d_model)


def _ffn_audio(c):
    return int(c.audio_config.encoder_ffn_dim)


def _hidden(c):
    return int(c.text_config.hidden_size)


def _head_dim(c):
    t = c.text_config
    return int(getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads)


def _q(c):
    return int(c.text_config.num_attention_heads) * _head_dim(c)


def _kv(c):
    return int(c.text_config.num_key_value_heads) * _head_dim(c)


def _intermediate(c):
    return int(c.text_config.intermediate_size)


#: one audio encoder layer (Qwen2AudioEncoderLayer, VoxtralEncoderLayer): (name, width, axis);
#: fc1 before the activation, as SeamlessM4T's ``ffn.fc1``
AUDIO_COMPONENTS = (
    ("self_attn_layer_norm", _d_audio, -1),
    ("self_attn.q_proj", _d_audio, -1),
    ("self_attn.k_proj", _d_audio, -1),
    ("self_attn.v_proj", _d_audio, -1),
    ("self_attn.out_proj", _d_audio, -1),
    ("final_layer_norm", _d_audio, -1),
    ("fc1", _ffn_audio, -1),
    ("fc2", _d_audio, -1),
)
#: one LM layer (Qwen2DecoderLayer, LlamaDecoderLayer): (name, module, width, what is read)
LM_COMPONENTS = (
    ("input_layernorm", "input_layernorm", _hidden, "output"),
    ("self_attn.q_proj", "self_attn.q_proj", _q, "output"),
    ("self_attn.k_proj", "self_attn.k_proj", _kv, "output"),
    ("self_attn.v_proj", "self_attn.v_proj", _kv, "output"),
    ("self_attn.o_proj", "self_attn.o_proj", _hidden, "output"),
    ("post_attention_layernorm", "post_attention_layernorm", _hidden, "output"),
    ("mlp.intermediate", "mlp.down_proj", _intermediate, "input"),
    ("mlp.down_proj", "mlp.down_proj", _hidden, "output"),
)


#: task -> instruction (engine.model.recorder.task_of); ``{target}``: the target language's English name.
#: Each asks for the answer alone, so that an instruction-tuned model starts with it: steps 1, 6
#: and 11 then read the answer's tokens, not a preamble. T2T is S2T's instruction on the text.
INSTRUCTIONS = {
    "S2T": "Translate this into {target}. Reply with the translation only.",
    "T2T": "Translate this into {target}. Reply with the translation only.",
    "ASR": "Transcribe this. Reply with the transcription only.",
    "TR": "Repeat this text exactly. Reply with the text only.",
}


def conversation(item, instruction: str) -> list[dict]:
    """One user turn: the audio (speech) or the sentence (text), then the instruction."""
    if item.modality == "speech":
        first = {"type": "audio", "audio_url": item.example_id}
    else:
        first = {"type": "text", "text": item.text}
    return [{"role": "user", "content": [first, {"type": "text", "text": instruction}]}]


def chat_prompts(processor, items, instructions):
    """Left-padded model inputs for ``items`` through the processor's own chat template and call."""
    convs = [conversation(item, instruction) for item, instruction in zip(items, instructions)]
    texts = processor.apply_chat_template(convs, add_generation_prompt=True, tokenize=False)
    audio = [np.asarray(item.waveform, dtype=np.float32).reshape(-1) for item in items if item.modality == "speech"]
    processor.tokenizer.padding_side = "left"
    kwargs = {"audio": audio, "sampling_rate": 16000} if audio else {}
    return processor(text=texts, return_tensors="pt", padding=True, **kwargs)
