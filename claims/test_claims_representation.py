"""Claims R1–R9: step-dependent cross-modal language representations (paper §4, A.3, A.4).

Each test judges one claim of ``fixtures/claims_registry.json`` through the ``claim``
fixture: the paper's bounds on ``--profile paper``, the recorded regression baseline on
``--profile tiny`` (the default). Operational definitions live in the registry.
"""


class TestSection4_1_DistributionOfLanguageNeurons:
    """§4.1, Figs. 2 and 3: where German top-1000 neurons sit."""

    def test_R7_speech_encoder_middle_layers_pointwise_conv(self, claim):
        """Speech encoder: layers ≈4–10; a pointwise conv over-, attention under-represented."""
        claim("R7")

    def test_R8_text_encoder_peaks_at_first_layer(self, claim):
        """Text encoder: top-1000 peak at layer 0."""
        claim("R8")

    def test_R9_decoder_self_attention_then_cross_attention(self, claim):
        """Decoder: self-attention at t=1, cross-attention (k, v, out) at t=11."""
        claim("R9")


class TestSection4_2_CrossModalOverlap:
    """§4.2, Fig. 4: overlap of speech- and text-derived top-1000 sets."""

    def test_R1_diagonal_overlap_ratio_highest_at_t1(self, claim):
        """Diagonal ratio 56.6% at t=1 > 34.63% (t=6), 36.83% (t=11), on the intervals of the differences."""
        claim("R1")

    def test_R2_permutation_test_significant_every_step(self, claim):
        """Exact permutation test p < 0.05 at every step, strongest at t=1."""
        claim("R2")

    def test_R3_total_overlap_grows_later(self, claim):
        """Σ O at t=6 and t=11 exceeds Σ O at t=1, on the intervals of the differences."""
        claim("R3")

    def test_R4_cross_language_overlap_more_prominent_later(self, claim):
        """fr–es and ja–zh off-diagonal overlap shares rise after t=1."""
        claim("R4")


class TestAppendixA3_Spearman:
    """A.3, Fig. 5: global rank correlation."""

    def test_R5_spearman_concentration_stable_and_typological(self, claim):
        """Concentration 22.9/20.1/20.9%: stable, max at t=1; {de,es,fr} vs {ja,zh} clusters."""
        claim("R5")


class TestAppendixA4_KSensitivity:
    """A.4, Fig. 6: robustness to k."""

    def test_R6_t1_highest_for_every_k(self, claim):
        """For every k, diagonal ratio highest at t=1 (sweep-wide on intervals); partial recovery at t=11."""
        claim("R6")
