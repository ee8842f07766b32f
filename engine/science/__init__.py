"""Science on plain arrays: exact average precision and its compiled kernels (``ranking``,
``ap_kernels``), set and rank statistics of speech and text neurons (``overlap``), half-sample
intervals (``intervals``), one step's cross-modal statistics (``crossmodal``), the script and
language-ID control rates of outputs (``scripts``, ``langid``) and the language table they read
(``languages``). Nothing here loads a model or touches a file; it imports only the base layer.
"""
