"""What an estimate states instead of measuring: a GPU when none is visible, XTTS speed, speech
and text lengths when the sentences are not known in advance. Every figure used is printed with
the estimate (``assumptions`` of its result)."""
from __future__ import annotations

#: The stated GPU model, used when the run's device is CUDA but no GPU is visible here (nothing is
#: measured on the CPU for it): an A100-class card in bf16. ``tflops``: sustained dense bf16
#: throughput (the A100's peak is 312); ``weight_read_gbps``: bandwidth at which a greedy decoding
#: step reads every weight once for its whole batch (the A100's is 1,555-2,039 GB/s); the
#: per-step framework overhead of transformers' ``generate`` (kernel launches, small batches):
#: ``step_overhead_s`` per step plus ``layer_overhead_s`` per decoder layer and step;
#: ``ap_speedup``: exact AP (torch.sort) on the GPU against this CPU's compiled kernels. Printed
#: with every estimate that uses it.
ASSUMED_GPU = {"tflops": 200.0, "weight_read_gbps": 1500.0, "step_overhead_s": 0.004, "layer_overhead_s": 0.0006,
               "ap_speedup": 20.0}
#: Seconds to synthesise one utterance with XTTS v2 on a GPU (not installed here to measure).
ASSUMED_TTS_S = {"xtts": 1.0, "natural": 0.0}
AUDIO_SECONDS = {"fleurs": 12.0}  # generous per-sentence duration of FLEURS speech
TEXT_TOKENS = 40  # generous input length in tokens when the sentences are not known in advance
PROMPT_TOKENS = 40  # a speech LLM's chat template and instruction around the input, in tokens
SELECTION_BYTES_PER_TEXT = 150  # selection.json bytes per (sentence, language) when texts are unknown
#: espeak-ng's CPU seconds per utterance and audio seconds per character of input text, when the
#: sentences (FLEURS) are not known before the data stage runs, so synthesis cannot be timed
ASSUMED_ESPEAK = {"s_per_utterance": 0.05, "audio_s_per_char": 0.07}


def assumed_gpu_costs(weight_bytes_per_param: int, decode_batches) -> tuple[dict, dict]:
    """The stated GPU's costs in the form the calibrations take: seconds per multiply-accumulate
    ``{"encode": s, "decode": {B: s}}`` for every decoding batch size B in ``decode_batches``, and
    ``generate``'s framework seconds ``{"step_s": s, "layer_s": s}`` per step and per decoder layer
    and step."""
    # per MAC: a decoding step reads every weight once for all B rows (bandwidth-bound), but
    # never faster than the arithmetic itself (compute-bound)
    mac = 1 / (ASSUMED_GPU["tflops"] * 1e12 / 2)
    mm = {"encode": mac,
          "decode": {b: max(mac, weight_bytes_per_param / (ASSUMED_GPU["weight_read_gbps"] * 1e9) / b)
                     for b in decode_batches}}
    gen = {"step_s": ASSUMED_GPU["step_overhead_s"], "layer_s": ASSUMED_GPU["layer_overhead_s"]}
    return mm, gen
