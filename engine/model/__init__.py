"""A model's inside: loading (``loader``, the speech-LLM families in ``speech_llm``), which
neurons exist (``catalog``), the one hooking surface (``hooks``), recording activations per
example and decoding step (``recorder``, ``lm_recorder``), median-value intervention
(``steering``) and the weights' identity (``fingerprint``). Imports the science and base layers.
"""
