"""Qwen2-Audio (``Qwen2AudioForConditionalGeneration``): a Whisper-style audio encoder whose
output is average-pooled by 2, one linear projector, and a Qwen2 LM.

The audio encoder always runs on a 30 s window (3,000 feature frames -> 1,500 positions after
its stride-2 convolution); the processor inserts one ``<|AUDIO|>`` token per valid pooled frame,
``(L - 1) // 2 + 1`` encoder frames for L valid feature frames, then ``(n - 2) // 2 + 1``.
The encoder masks its padded positions as keys, so the valid frames of an utterance do not
depend on the padding.
"""
from __future__ import annotations

from engine.model.speech_llm import Family
from engine.model.speech_llm.shape import AUDIO_COMPONENTS, LM_COMPONENTS, chat_prompts

#: Qwen/Qwen2-Audio-7B-Instruct's config.json. Qwen2AudioConfig() builds its text part from
#: Qwen2Config() (intermediate 22,016, vocabulary 151,936); the checkpoint's differ.
CHECKPOINT = "Qwen/Qwen2-Audio-7B-Instruct"
CONFIG = {
    "audio_config": {"d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20,
                     "encoder_ffn_dim": 5120, "num_mel_bins": 128, "max_source_positions": 1500,
                     "activation_function": "gelu"},
    "text_config": {"model_type": "qwen2", "hidden_size": 4096, "intermediate_size": 11008,
                    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                    "vocab_size": 156032, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
                    "rope_theta": 10000.0, "tie_word_embeddings": False},
    "audio_token_id": 151646,
}
SOURCE = ("config.json of Qwen/Qwen2-Audio-7B-Instruct as mirrored by mlx-community/Qwen2-Audio-7B-Instruct-4bit "
          "(revision c6557000): intermediate_size 11008, vocab_size 156032, max_position_embeddings 8192, "
          "rms_norm_eps 1e-5, rope_theta 10000, audio_token_index 151646, audio encoder 32 x 1280 (ffn 5120, "
          "20 heads, 128 mel bins); hidden 4096, 32 layers, 32 heads and kv heads are not in that file, so "
          "Qwen2Config's defaults (transformers models/qwen2/configuration_qwen2.py) apply")


def checkpoint_config():
    from transformers import Qwen2AudioConfig

    return Qwen2AudioConfig(**CONFIG)


def _projector_valid(encoder_frames):
    # the encoder's avg_pool1d(2, 2) before the projector, as Qwen2AudioEncoder computes it
    return (encoder_frames - 2) // 2 + 1


FAMILY = Family(
    model_type="qwen2_audio", class_name="Qwen2AudioForConditionalGeneration", checkpoint=CHECKPOINT,
    checkpoint_config=checkpoint_config, config_source=SOURCE,
    audio_layers="model.audio_tower.layers", audio_components=AUDIO_COMPONENTS,
    projector=(("model.multi_modal_projector.linear", lambda c: c.text_config.hidden_size, -1),),
    lm_layers="model.language_model.layers", lm="model.language_model",
    embed="model.language_model.embed_tokens", lm_components=LM_COMPONENTS,
    projector_valid=_projector_valid, audio_token_id=lambda c: int(c.audio_token_id),
    # Qwen2-Audio's report evaluates these among others; it documents no closed list
    languages=("eng", "deu", "spa", "fra", "ita", "por", "nld", "cmn", "jpn", "kor", "rus", "arb", "hin"),
    build_prompts=chat_prompts,
)
