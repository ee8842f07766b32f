"""What a run will need, per stage, computed before anything runs.

Sizes come from the neuron catalog and the model's parameter counts (the model is built on the
meta device, so Large needs no weights and no network). Costs come from throughputs *measured
at estimate time on this code and this machine* (``calibrate``): matrix products in the model's
dtype at decoding and at encoding batch shapes, the framework's per-step cost of transformers'
greedy ``generate`` through the recorder, streamed SHA-256, the activation store's write and read
path, exact AP and the bootstrap on store blocks of the run's row count, the compare statistics
per bootstrap resample at two widths, espeak-ng synthesis, and the resident size of a stage
process. A code change that makes a stage faster or slower therefore shows in the next
estimate.

Per stage the estimate gives ``time_s`` (inside the stage's process, start-up imports excluded),
``peak_rss_bytes``, ``gpu_peak_bytes`` (CUDA devices) and ``disk_bytes`` (what the stage leaves
under the output root). ``python -m engine rehearse`` measures the same figures on a random-weight
model of the real architecture; its test holds RAM and disk within ±30 % and time within a factor
of 2 on CPU. Assumptions that cannot be measured here (GPU throughput when no GPU is visible,
XTTS speed, FLEURS durations) are stated in ``assumptions`` and in the printed lines.

The modules, in the order an estimate uses them:

- ``assumptions``: the figures stated instead of measured (``ASSUMED_GPU``, XTTS, durations);
- ``measure``: least time of repeated runs, figures from a fresh stage process, parallelism;
- ``shape``: the model's architecture on the meta device, the sentences, a speech LLM's prompt
  lengths, and the run's counts (``Plan``);
- ``calibrate``: the throughputs and memory measured on this code;
- ``context``: the plan with its measurements and inputs' lengths, and the model's compute per
  batch (``Context``);
- ``sizes``: bytes the run writes and holds that the stages and the summary share;
- ``cost``: one function per stage, the launch over ranks, and ``estimate``;
- ``summary``: the returned figures and the printed lines;
- ``command``: ``python -m engine estimate``.
"""
from __future__ import annotations

from engine.tools.estimate.assumptions import ASSUMED_GPU, ASSUMED_TTS_S
from engine.tools.estimate.command import estimate_arguments, estimate_command
from engine.tools.estimate.cost import STAGES, busiest_rank, estimate
from engine.tools.estimate.measure import stage_process_rss
from engine.tools.estimate.shape import model_shape, prompt_widths

__all__ = ["ASSUMED_GPU", "ASSUMED_TTS_S", "STAGES", "busiest_rank", "estimate", "estimate_arguments",
           "estimate_command", "model_shape", "prompt_widths", "stage_process_rss"]
