"""How quantities are defined where the paper's text and its authors' code differ.

The paper's numbers were computed by its authors' code (GitHub konta3738/generation-step-aware-
framework, main branch), which departs from the paper's text in several places. Each such choice
is a setting of a profile's ``[definitions]`` section; ``preset`` sets all of them at once:
``paper_text`` (the default: the paper's text and ../shared/SPEC.md) or ``official_code`` (what the
authors' code computes). ``DEFINITIONS`` lists every setting with both values and the official file
it follows; ``resolve`` applies a preset; ``STAGES_OF`` says which stages each setting changes, so
an artifact computed under one definition is never reused under another.

A setting at its ``paper_text`` value is left out of every stage key (``key_settings``): the
paper's text is what every run computed before these were settings, so those runs stay valid.
"""
from __future__ import annotations

from dataclasses import dataclass

PRESETS = ("paper_text", "official_code")


@dataclass(frozen=True)
class Definition:
    name: str
    paper_text: object
    official_code: object
    choices: tuple          # accepted values; () for an integer setting (>= 0)
    official_file: str      # where the authors' code takes the official choice
    stages: tuple           # the stages whose output it changes
    what: str               # one line: the two definitions


DEFINITIONS = (
    Definition("decoder_activity", "position", "prefix_mean", ("position", "prefix_mean"),
               "selfcond/responses.py cache_responses (prefix lengths [2, 7, 12]); selfcond/models.py "
               "pool_responses (mean over axis 1)", ("rank", "steer"),
               "decoder activity at step t: the component's output at position t (paper §3), or its mean "
               "over positions 0..t of one forward on the greedy prefix of length t+1"),
    Definition("short_outputs", "drop", "keep", ("drop", "keep"),
               "selfcond/responses.py _get_decoder_prefixes_from_generate", ("record",),
               "an output that ends before step t: left out of step t, or kept with its shorter prefix, "
               "EOS included (prefix_mean only)"),
    Definition("text_length", 0, 256, (),
               "main_prod_env.sh (--seq-len 256); selfcond/data.py pre_process_sequence; "
               "selfcond/models.py pool_responses", ("record",),
               "text input: its own tokens (0), or padded to this many tokens, as the authors' data loader pads "
               "every sentence (the attention masks the pads; definitions.pool_masked puts them in the means)"),
    Definition("text_source_tag", "own", "default", ("own", "default"),
               "selfcond/data.py pre_process_sequence (tokenizer.encode(text), no src_lang)", ("record",),
               "text input's special tokens: each language's own __xx__ tag, or what encode(text) gives a "
               "freshly loaded tokenizer (SeamlessM4T's initial target template: </s> __eng__, for every "
               "language)"),
    Definition("pool_masked", False, True, (False, True),
               "selfcond/models.py pool_responses (np.mean over axis 1, the attention mask not read)", ("record",),
               "encoder means (and cross-attention k/v) over the valid positions only, or over every position "
               "of the input as it runs alone, masked ones included (text pads, the masked pad frame of an "
               "odd-length utterance)"),
    Definition("modules", "paper_table", "all_hooked", ("paper_table", "all_hooked"),
               "selfcond/models.py _collect_responses_info_for_model; selfcond/responses.py "
               "read_responses_from_cached (skip_substrings)", ("record",),
               "neurons: the paper's Table 5 components, or every Linear, Conv1d, LayerNorm, Embedding and "
               "GLU output under the three stacks but distance_embedding and feature_projection"),
    Definition("long_speech_frames", 0, 1024, (),
               "selfcond/models.py pool_responses (transpose rule); selfcond/responses.py "
               "read_responses_from_cached (majority-length filter)", ("record",),
               "speech utterances longer than this many encoder frames are left out of the speech side "
               "(0: none); the authors' code pools them over the wrong axis and then drops them"),
    Definition("precision", "store", "float32", ("store", "float32"),
               "selfcond/models.py run_inference (float32 numpy), pool_responses", ("record",),
               "pooled means stored in record.store_dtype (the model's 16-bit type by default), or in "
               "float32"),
    Definition("control_rate", "script_units", "sentencepiece", ("script_units", "sentencepiece"),
               "utils/codemix_seamless_regex_metrics.py (p_tok_latin_given_pure_lc)", ("steer",),
               "control rate: Latin words and CJK characters (script units), or the model tokenizer's "
               "pieces, target / (source + target) over pieces of one script"),
    Definition("steer_sentences", "held_out", "identification", ("held_out", "identification"),
               "main_prod_env.sh (--seed 1 101: the first 100 clips of the identification files)",
               ("steer",),
               "sentences steered: held out from identification, or the first data.n_steer sentences "
               "the neurons were identified from"),
    Definition("synthesis_text", "raw", "normalized", ("raw", "normalized"),
               "utils/xtts_vc.py (FLEURS transcription column)", ("speech",),
               "text synthesised: FLEURS' raw_transcription, or its normalised transcription (FLEURS "
               "only; the embedded corpus has no normalised form and synthesises its text either way)"),
)
BY_NAME = {d.name: d for d in DEFINITIONS}


def preset_values(preset: str) -> dict:
    """Every definition's value under ``preset``."""
    return {d.name: getattr(d, preset) for d in DEFINITIONS}


def resolve(file_section: dict, set_keys: set[str], final: dict) -> dict:
    """The ``[definitions]`` section in force.

    ``file_section``: the section as the profile file writes it (its own ``preset`` included);
    ``set_keys``: the names given with ``--set``; ``final``: the section after ``--set``. A value
    given with ``--set`` stays; so does a file value that differs from the file's own preset (a
    choice the profile makes); every other setting takes the final preset's value.
    """
    file_preset = preset_values(file_section["preset"]) if file_section.get("preset") in PRESETS else {}
    chosen = preset_values(final["preset"]) if final.get("preset") in PRESETS else {}
    out = {"preset": final["preset"]}
    for d in DEFINITIONS:
        if d.name in set_keys or file_section.get(d.name) != file_preset.get(d.name, file_section.get(d.name)):
            out[d.name] = final[d.name]
        else:
            out[d.name] = chosen.get(d.name, final[d.name])
    return out


def key_settings(definitions: dict, stage: str) -> dict:
    """The definitions that change ``stage``'s output and are not at their paper_text value (left
    out of the key, so runs from before they were settings stay valid)."""
    return {d.name: definitions[d.name] for d in DEFINITIONS
            if stage in d.stages and definitions[d.name] != d.paper_text}


def recorded_activities(cfg: dict) -> list[str]:
    """Decoder activities the record stage keeps: the one the definitions use and those
    ``record.decoder_activity`` adds, in a fixed order ("position" first)."""
    wanted = {cfg["definitions"]["decoder_activity"], *cfg["record"]["decoder_activity"]}
    return [a for a in BY_NAME["decoder_activity"].choices if a in wanted]


def differing(definitions: dict) -> dict:
    """The settings that are not the paper's text: ``{name: value}``."""
    return {d.name: definitions[d.name] for d in DEFINITIONS if definitions[d.name] != d.paper_text}
