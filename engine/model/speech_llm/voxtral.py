"""Voxtral (``VoxtralForConditionalGeneration``): a Whisper-style audio encoder, a projector that
reads 4 consecutive encoder frames at once (linear -> GELU -> linear), and a Llama LM.

Each 30 s window (3,000 feature frames -> 1,500 encoder positions) becomes 375 audio tokens, the
padding of a short utterance included: Voxtral's encoder attends to every position of its window
(transformers passes it no mask). Valid frames, for pooling: the utterance's own, ``(L - 1) // 2 + 1``
encoder positions for L valid feature frames, and the ``ceil(n / 4)`` projector positions whose
4 frames hold at least one of them. The tokenizer and chat template are mistral-common's
(Tekken), through transformers' ``MistralCommonBackend``, as ``VoxtralProcessor`` uses them.
"""
from __future__ import annotations

from engine.model.speech_llm import Family
from engine.model.speech_llm.mistral import voxtral_prompts
from engine.model.speech_llm.shape import AUDIO_COMPONENTS, LM_COMPONENTS

CHECKPOINT = "mistralai/Voxtral-Mini-3B-2507"
CONFIG = {
    "audio_config": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                     "num_attention_heads": 20, "num_mel_bins": 128, "max_source_positions": 1500},
    "text_config": {"model_type": "llama", "hidden_size": 3072, "intermediate_size": 8192,
                    "num_hidden_layers": 30, "num_attention_heads": 32, "num_key_value_heads": 8,
                    "head_dim": 128, "vocab_size": 131072, "max_position_embeddings": 131072,
                    "rope_theta": 100000000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False},
    "audio_token_id": 24,
    "projector_hidden_act": "gelu",
}
SOURCE = ("transformers models/voxtral/convert_voxtral_weights_to_hf.py (audio_token_id 24, projector gelu, "
          "the text config mapping) and VoxtralConfig's defaults for mistralai/Voxtral-Mini-3B-2507 "
          "(models/voxtral/configuration_voxtral.py: text 3072 x 30 layers, intermediate 8192, 8 kv heads, "
          "head_dim 128, vocabulary 131072, rope_theta 1e8; audio 1280 x 32 layers, ffn 5120, 20 heads); "
          "num_attention_heads 32 and tie_word_embeddings false as in copies of the checkpoint's config.json "
          "(an MLX conversion's config); languages from the model card")


def checkpoint_config():
    from transformers import VoxtralConfig

    return VoxtralConfig(**CONFIG)


def _projector_valid(encoder_frames):
    # the projector reads frames 4j .. 4j+3 as its position j
    return (encoder_frames + 3) // 4


def _hidden(c):
    return int(c.text_config.hidden_size)


FAMILY = Family(
    model_type="voxtral", class_name="VoxtralForConditionalGeneration", checkpoint=CHECKPOINT,
    checkpoint_config=checkpoint_config, config_source=SOURCE,
    audio_layers="model.audio_tower.layers", audio_components=AUDIO_COMPONENTS,
    projector=(("model.multi_modal_projector.linear_1", _hidden, -1),
               ("model.multi_modal_projector.act", _hidden, -1),
               ("model.multi_modal_projector.linear_2", _hidden, -1)),
    lm_layers="model.language_model.layers", lm="model.language_model",
    embed="model.language_model.embed_tokens", lm_components=LM_COMPONENTS,
    projector_valid=_projector_valid, audio_token_id=lambda c: int(c.audio_token_id),
    languages=("eng", "spa", "fra", "por", "hin", "deu", "nld", "ita"),
    build_prompts=voxtral_prompts,
)
