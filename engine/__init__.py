"""Generation-step-aware cross-modal language neurons in SeamlessM4T v2.

Modules, one concept each: ``ranking`` (average precision, top/bottom-k), ``overlap``
(cross-modal set and rank statistics), ``control`` (script control rate, effect ratio),
``catalog`` (which neurons exist), ``loader`` (one model for all tasks), ``recorder``
(activations per example and decoding step), ``data`` (corpora, speech, task views),
``store`` (on-disk activations), ``steering`` (median-value intervention), ``pipeline``
(resumable stages and profiles), ``report`` (claims report).
"""
from engine.errors import UserError

__all__ = ["UserError"]
__version__ = "0.1.0"
