"""Which neurons exist: the paper's components (SPEC §2) per stack and layer, in a fixed order.

A neuron is one channel of one component's output. The catalog fixes, for every component,
its module path, width, channel axis of the hooked output, and how positions are reduced
(``encoder_pooled``: mean over valid encoder positions; ``decoder_step``: the output at decoder
position t; ``step_invariant``: cross-attention k/v, which run over encoder positions and are
mean-pooled like encoder components). Each stack's neurons form one flat vector whose layout is
catalog order: layer, then component order below.

Two module sets (``build_catalog``'s ``modules``): ``paper_table`` (default), the paper's table
below, optionally with ``extras``; ``all_hooked``, the modules the authors' code records
(``all_hooked_catalog``), which adds modules outside the conformer's convolution-attention-FFN
blocks: the speech encoder's adapter, pooled at its own rates (``adapter_in_pooled``: an adapter
layer's input norms, at the layer's input rate; ``adapter_pooled``: its other modules, at its output
rate; ``final_pooled``: ``inner_layer_norm``, after the adapter), and v1's relative-position
projection (``relative_pooled``). A component outside a numbered layer has layer -1.

Model families (read from the config's ``model_type``, engine.model.loader.model_family):

- ``seamless_m4t_v2`` (SeamlessM4T v2): the paper's component list (SPEC §2), as below.
- ``seamless_m4t`` (SeamlessM4T v1, medium and large): the same list with two differences
  in the conformer's convolution module and attention. ``conv_module.batch_norm`` takes the
  place of v2's ``conv_module.depthwise_layer_norm``: it is the normalisation right after the
  depthwise convolution and before the activation, one channel per hidden unit, so it fills the
  same slot; it runs on [batch, hidden, time], so its channel axis is 1 (v2's layer norm runs
  on [batch, time, hidden], axis -1). ``self_attn.linear_pos`` (v1's relative-position
  projection) is left out: its input is the sinusoidal position table, not the utterance, so its
  output depends only on the sequence length and cannot tell languages apart (v2's equivalent,
  ``self_attn.distance_embedding``, is left out by the paper for the same reason). The text
  encoder and decoder layers are identical in both families.

Every component path is resolved in the instantiated module tree, so a catalog always matches
its model and a family whose modules differ fails loudly instead of hooking nothing.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from engine.errors import UserError
from engine.model import speech_llm
from engine.model.loader import TINY_MODEL_DIR, model_class, model_family, read_config

#: The method's three groups of neurons, each ranked on its own: the encoder that reads speech, the
#: encoder that reads text, and the decoder both share. Named after SeamlessM4T's stacks, which
#: they are for that model (and in every artifact); a speech LLM's are its audio encoder with its
#: projector, its token embedding, and its language model (``group_labels``).
GROUPS = ("speech_encoder", "text_encoder", "text_decoder")
#: A speech LLM's stacks, named for what they are, and the group each is ranked in.
SPEECH_LLM_STACKS = {"audio_encoder": "speech_encoder", "projector": "speech_encoder",
                     "token_embedding": "text_encoder", "language_model": "text_decoder"}


def group_labels(model_type: str | None) -> dict[str, str]:
    """How a report names the three groups of a model of ``model_type`` (None: SeamlessM4T)."""
    if model_type in speech_llm.FAMILIES:
        return {"speech_encoder": "audio encoder + projector", "text_encoder": "token embedding",
                "text_decoder": "language model"}
    return {"speech_encoder": "speech encoder", "text_encoder": "text encoder", "text_decoder": "decoder"}


# (component name, width attribute, channel axis); width "hidden" | "2hidden" | config attribute.
SPEECH_COMPONENTS = (
    ("ffn1_layer_norm", "hidden", -1),
    ("ffn1.intermediate_dense", "speech_encoder_intermediate_size", -1),
    ("ffn1.output_dense", "hidden", -1),
    ("ffn2_layer_norm", "hidden", -1),
    ("ffn2.intermediate_dense", "speech_encoder_intermediate_size", -1),
    ("ffn2.output_dense", "hidden", -1),
    ("self_attn_layer_norm", "hidden", -1),
    ("self_attn.linear_q", "hidden", -1),
    ("self_attn.linear_k", "hidden", -1),
    ("self_attn.linear_v", "hidden", -1),
    ("self_attn.linear_out", "hidden", -1),
    ("conv_module.layer_norm", "hidden", -1),
    ("conv_module.pointwise_conv1", "2hidden", 1),
    ("conv_module.glu", "hidden", 1),
    ("conv_module.depthwise_conv", "hidden", 1),
    ("conv_module.depthwise_layer_norm", "hidden", -1),
    ("conv_module.pointwise_conv2", "hidden", 1),
)
#: v1's conformer: batch_norm where v2 has depthwise_layer_norm (see the module docstring).
SPEECH_COMPONENTS_V1 = tuple(
    ("conv_module.batch_norm", "hidden", 1) if name == "conv_module.depthwise_layer_norm" else (name, width, axis)
    for name, width, axis in SPEECH_COMPONENTS
)
SPEECH_COMPONENTS_BY_FAMILY = {"seamless_m4t_v2": SPEECH_COMPONENTS, "seamless_m4t": SPEECH_COMPONENTS_V1}
TEXT_ENCODER_COMPONENTS = (
    ("self_attn_layer_norm", "hidden", -1),
    ("self_attn.q_proj", "hidden", -1),
    ("self_attn.k_proj", "hidden", -1),
    ("self_attn.v_proj", "hidden", -1),
    ("self_attn.out_proj", "hidden", -1),
    ("ffn_layer_norm", "hidden", -1),
    ("ffn.fc1", "encoder_ffn_dim", -1),
    ("ffn.fc2", "hidden", -1),
)
DECODER_COMPONENTS = (
    ("self_attn_layer_norm", "hidden", -1),
    ("self_attn.q_proj", "hidden", -1),
    ("self_attn.k_proj", "hidden", -1),
    ("self_attn.v_proj", "hidden", -1),
    ("self_attn.out_proj", "hidden", -1),
    ("cross_attention_layer_norm", "hidden", -1),
    ("cross_attention.q_proj", "hidden", -1),
    ("cross_attention.k_proj", "hidden", -1),
    ("cross_attention.v_proj", "hidden", -1),
    ("cross_attention.out_proj", "hidden", -1),
    ("ffn_layer_norm", "hidden", -1),
    ("ffn.fc1", "decoder_ffn_dim", -1),
    ("ffn.fc2", "hidden", -1),
)
STEP_INVARIANT = {"cross_attention.k_proj", "cross_attention.v_proj"}

# Extras (off by default; not in the paper's table). "ffn.act" is the FFN's real activation in
# text encoder and decoder layers (not the decoder layer's never-called ``activation_fn``).
EXTRAS = ("ffn.act", "intermediate_ffn", "adapter")
_SPEECH_POST = {  # speech-encoder modules after the conformer stack, reported as layer -1
    "intermediate_ffn": (("intermediate_ffn.intermediate_dense", "speech_encoder_intermediate_size"),
                         ("intermediate_ffn.output_dense", "hidden")),
    "adapter": (("adapter.layers.{j}.residual_conv", "2hidden"),
                ("adapter.layers.{j}.self_attn.linear_out", "hidden"),
                ("adapter.layers.{j}.ffn.intermediate_dense", "speech_encoder_intermediate_size"),
                ("adapter.layers.{j}.ffn.output_dense", "hidden")),
}


@dataclass(frozen=True)
class Component:
    """One component: ``dim`` neurons, the channels of one module's output (or input) per layer.

    ``stack``: the stack of modules it belongs to, named for what it is (SeamlessM4T's
    ``speech_encoder``, ``text_encoder``, ``text_decoder``; a speech LLM's ``audio_encoder``,
    ``projector``, ``token_embedding``, ``language_model``). ``group``: which of the method's three
    groups (``GROUPS``) it is ranked in; for SeamlessM4T its stack. ``offset``: its first neuron in
    its group's flat vector (catalog order).
    """

    stack: str
    layer: int
    name: str
    path: str
    dim: int
    channel_axis: int
    position: str
    offset: int
    #: "output" (the module's output) or "input" (its first input: a speech LLM's MLP intermediate)
    reads: str = "output"
    group: str = ""

    def __post_init__(self):
        if not self.group:  # SeamlessM4T, and catalogs written before groups were named
            object.__setattr__(self, "group", self.stack)


@dataclass(frozen=True)
class Catalog:
    components: tuple[Component, ...]

    def group(self, group: str) -> tuple[Component, ...]:
        """The components of one of the method's groups (``GROUPS``), in catalog order."""
        if group not in GROUPS:
            raise ValueError(f"group '{group}' is not one of {GROUPS}")
        return tuple(c for c in self.components if c.group == group)

    def stack(self, stack: str) -> tuple[Component, ...]:
        """The components of one stack (``stacks()``), in catalog order."""
        if stack not in self.stacks():
            raise ValueError(f"stack '{stack}' is not one of {self.stacks()}")
        return tuple(c for c in self.components if c.stack == stack)

    def stacks(self) -> tuple[str, ...]:
        """The model's stacks in catalog order, named for what they are."""
        return tuple(dict.fromkeys(c.stack for c in self.components))

    def n_neurons(self, group: str) -> int:
        """Neurons in one of the method's groups: the width of its recorded matrix."""
        return sum(c.dim for c in self.group(group))

    @property
    def total(self) -> int:
        return sum(c.dim for c in self.components)

    def counts(self) -> dict[str, int]:
        """Neurons per stack (what they are) and ``total``."""
        out = {s: sum(c.dim for c in self.stack(s)) for s in self.stacks()}
        out["total"] = self.total
        return out

    def locate(self, group: str, flat: np.ndarray) -> list[tuple[Component, np.ndarray]]:
        """Group flat neuron indices of ``group`` by component.

        Returns ``(component, channels)`` pairs in catalog order, only for components that hold
        at least one index; ``channels`` are int64 channel indices within the component, in the
        order the indices were given. IndexError for indices outside ``[0, n_neurons(group))``.
        """
        comps = self.group(group)
        flat = np.asarray(flat, dtype=np.int64).reshape(-1)
        n = sum(c.dim for c in comps)
        if flat.size and (flat.min() < 0 or flat.max() >= n):
            raise IndexError(f"neuron index out of range [0, {n}) for group '{group}'")
        starts = np.array([c.offset for c in comps], dtype=np.int64)
        which = np.searchsorted(starts, flat, side="right") - 1
        out = []
        for i in np.unique(which):
            sel = flat[which == i]
            out.append((comps[i], sel - comps[i].offset))
        return out

    def to_json(self) -> dict:
        # "reads" and "group" are written only where they are not the default (the output; the
        # stack itself), so SeamlessM4T catalogs keep their bytes
        return {"components": [{k: v for k, v in asdict(c).items()
                                if not (k == "reads" and v == "output" or k == "group" and v == c.stack)}
                               for c in self.components]}

    @classmethod
    def from_json(cls, d: dict) -> "Catalog":
        return cls(tuple(Component(**c) for c in d["components"]))


def _width(config, spec: str) -> int:
    if spec == "hidden":
        return int(config.hidden_size)
    if spec == "2hidden":
        return 2 * int(config.hidden_size)
    return int(getattr(config, spec))


def build_catalog(model_or_config, extras: Sequence[str] = (), modules: str = "paper_table") -> Catalog:
    """Catalog of a SeamlessM4T model (v1 ``SeamlessM4TModel`` or v2 ``SeamlessM4Tv2Model``) or
    of its config (instantiated on the meta device, no weights).

    The family comes from ``config.model_type``. ``extras`` may hold ``"ffn.act"``,
    ``"intermediate_ffn"``, ``"adapter"``. Layer counts and widths are read from the
    instantiated modules; every component path must exist in the module tree (ValueError
    naming the first that does not). ``modules="all_hooked"``: the authors' module set instead
    of the paper's table (``all_hooked_catalog``; SeamlessM4T v2 and v1, no extras).
    """
    import torch

    unknown = set(extras) - set(EXTRAS)
    if unknown:
        raise ValueError(f"unknown extras {sorted(unknown)}; choose from {EXTRAS}")
    if modules not in ("paper_table", "all_hooked"):
        raise UserError(f"modules '{modules}' is not paper_table or all_hooked")
    if modules == "all_hooked":  # before a speech LLM is instantiated, even on the meta device
        _check_hooked_family(model_or_config.config if isinstance(model_or_config, torch.nn.Module)
                             else model_or_config)
    if isinstance(model_or_config, torch.nn.Module):
        model = model_or_config
    else:
        with torch.device("meta"):
            model = model_class(model_or_config)(model_or_config)
    config = model.config
    if modules == "all_hooked":
        if extras:
            raise ValueError("extras add to the paper's table; the authors' module set already holds them")
        return all_hooked_catalog(model)
    if speech_llm.is_speech_llm(config):
        if extras:
            raise ValueError(f"extras {sorted(extras)} exist only for SeamlessM4T models")
        return _speech_llm_catalog(model, speech_llm.family(config))
    speech_table = SPEECH_COMPONENTS_BY_FAMILY[model_family(config)]
    layers = {
        "speech_encoder": ("speech_encoder.encoder.layers", len(model.speech_encoder.encoder.layers), speech_table),
        "text_encoder": ("text_encoder.layers", len(model.text_encoder.layers), TEXT_ENCODER_COMPONENTS),
        "text_decoder": ("text_decoder.layers", len(model.text_decoder.layers), DECODER_COMPONENTS),
    }
    components: list[Component] = []
    for stack in GROUPS:
        prefix, n_layers, table = layers[stack]
        rows = list(table)
        if "ffn.act" in extras and stack != "speech_encoder":
            at = [n for n, _, _ in rows].index("ffn.fc1") + 1
            rows.insert(at, ("ffn.act", rows[at - 1][1], -1))
        offset = 0
        for i in range(n_layers):
            for name, width, axis in rows:
                if stack == "text_decoder":
                    position = "step_invariant" if name in STEP_INVARIANT else "decoder_step"
                else:
                    position = "encoder_pooled"
                dim = _width(config, width)
                _check_path(model, f"{prefix}.{i}.{name}")
                components.append(Component(stack, i, name, f"{prefix}.{i}.{name}", dim, axis, position, offset))
                offset += dim
        if stack == "speech_encoder":
            for extra in ("intermediate_ffn", "adapter"):
                if extra not in extras:
                    continue
                if extra == "intermediate_ffn":
                    n_rep = 1
                else:
                    adapter = model.speech_encoder.adapter
                    n_rep = 0 if adapter is None else len(adapter.layers)
                for j in range(n_rep):
                    for tmpl, width in _SPEECH_POST[extra]:
                        name = tmpl.format(j=j)
                        axis = 1 if name.endswith("residual_conv") else -1
                        dim = _width(config, width)
                        # adapter outputs run at the sub-sampled (stride-8) rate: the recorder pools
                        # them with the post-adapter mask.
                        pos = "adapter_pooled" if extra == "adapter" else "encoder_pooled"
                        components.append(Component(stack, -1, name, f"speech_encoder.{name}", dim, axis, pos, offset))
                        offset += dim
    return Catalog(tuple(components))


#: The authors' module classes (selfcond/models.py, _collect_responses_info_for_model): a module
#: counts when the last part of its class's name is exactly one of these.
HOOKED_KINDS = ("Linear", "Conv1d", "LayerNorm", "Embedding", "GLU")
#: Module names the authors' reader skips (selfcond/responses.py, read_responses_from_cached).
HOOKED_SKIP = ("self_attn.distance_embedding", "feature_projection")
#: The convolution whose output a GLU of SeamlessM4T halves, by the GLU's name in its parent: the
#: conformer's ``conv_module.glu`` and an adapter layer's ``activation``. The adapter's GLU runs
#: twice, on ``residual_conv``'s output and then on ``self_attn_conv``'s (the same width); what is
#: read is its second output, as the authors' hook, which keeps the last call, reads it.
_GLU_INPUT = {"glu": "pointwise_conv1", "activation": "self_attn_conv"}
#: An adapter layer's modules that run on its input, before its strided convolutions.
ADAPTER_INPUT_NORMS = ("residual_layer_norm", "self_attn_layer_norm")


def _class_name(module) -> str:
    """A module's class name as the authors' code reads it (selfcond/models.py, ``_compute_response_infos``)."""
    return str(module.__class__).split(".")[-1].split("'")[0]


def all_hooked_catalog(model) -> Catalog:
    """The authors' module set of a SeamlessM4T model (v2 or v1): every module under the three
    stacks whose class name is exactly one of ``HOOKED_KINDS`` (so SeamlessM4T's scaled word
    embeddings, ``*ScaledWordEmbedding``, are not), but the ``HOOKED_SKIP`` names; each output's
    channels are neurons. Grouped into the three stacks (``GROUPS`` order), in ``named_modules``
    order within each; widths from the modules' attributes.

    The authors keep a module whose output in their dummy forward has 2 or 3 dims after the batch
    dim: every module selected here outputs ``[B, T, C]`` or ``[B, C, T]`` (tests/
    test_official_modules.py checks the whole rule against real forwards). Beyond the paper's
    table this holds each conformer layer's ``final_layer_norm``, the speech encoder's final
    ``encoder.layer_norm``, ``intermediate_ffn``, the adapter's modules, ``inner_layer_norm``, the
    text encoder's and the decoder's final ``layer_norm``; on v1, each conformer layer's
    ``self_attn.linear_pos`` (v1's ``conv_module.batch_norm`` is a BatchNorm1d, not one of the
    classes). Modules outside a numbered layer, the adapter's included, get layer -1 (the authors'
    figures count them as "other").

    Channel axis: a Conv1d's output and a GLU's (``dim=1``) are ``[B, C, T]``, axis 1; every other
    output's channels are its last axis. Positions: conformer-rate speech modules
    ``encoder_pooled``; an adapter layer's ``ADAPTER_INPUT_NORMS`` at the layer's input rate
    (``adapter_in_pooled``), its other modules at its output rate (``adapter_pooled``);
    ``inner_layer_norm`` after the adapter (``final_pooled``); v1's ``linear_pos`` over the relative
    positions between valid frames (``relative_pooled``: its output is ``[1, 2T - 1, C]``, one row
    per relative position); text encoder modules ``encoder_pooled``; decoder modules
    ``decoder_step``, cross-attention k/v ``step_invariant``. UserError for a speech LLM: the
    authors' code covers SeamlessM4T only.
    """
    _check_hooked_family(model.config)
    per_stack: dict[str, list] = {g: [] for g in GROUPS}
    for path, module in model.named_modules():
        stack = path.split(".")[0]
        kind = _class_name(module)
        if stack not in GROUPS or kind not in HOOKED_KINDS or any(s in path for s in HOOKED_SKIP):
            continue
        per_stack[stack].append((path, module, kind))
    components: list[Component] = []
    for stack in GROUPS:
        offset = 0
        for path, module, kind in per_stack[stack]:
            layer, name, position = _hooked_place(stack, path)
            dim, axis = _hooked_channels(model, path, module, kind)
            components.append(Component(stack, layer, name, path, dim, axis, position, offset))
            offset += dim
    return Catalog(tuple(components))


def _check_hooked_family(config) -> None:
    if speech_llm.is_speech_llm(config) or model_family(config) not in ("seamless_m4t", "seamless_m4t_v2"):
        raise UserError(f"the authors' module set (modules=all_hooked) is defined by their code for SeamlessM4T "
                        f"only (v2 and v1); this model is a {config.model_type}: use modules=paper_table")


def _hooked_place(stack: str, path: str) -> tuple[int, str, str]:
    """``(layer, component name, position)`` of a module of the authors' set (``all_hooked_catalog``):
    in a numbered layer its layer and its name there, elsewhere layer -1 and its path in its stack."""
    rest = path[len(stack) + 1:]
    layered = {"speech_encoder": "encoder.layers.", "text_encoder": "layers.", "text_decoder": "layers."}[stack]
    if rest.startswith(layered):
        layer, _, name = rest[len(layered):].partition(".")
        if stack == "text_decoder":
            position = "step_invariant" if name in STEP_INVARIANT else "decoder_step"
        elif name == "self_attn.linear_pos":  # v1: one row per relative position, not per frame
            position = "relative_pooled"
        else:
            position = "encoder_pooled"
        return int(layer), name, position
    if stack == "text_decoder":
        return -1, rest, "decoder_step"
    if stack == "text_encoder":
        return -1, rest, "encoder_pooled"
    if rest.startswith("adapter.layers."):
        name = rest.split(".", 3)[3]
        return -1, rest, "adapter_in_pooled" if name in ADAPTER_INPUT_NORMS else "adapter_pooled"
    if rest == "inner_layer_norm":
        return -1, rest, "final_pooled"
    if rest == "encoder.layer_norm" or rest.startswith("intermediate_ffn."):
        return -1, rest, "encoder_pooled"  # after the conformer layers, before the adapter: frame rate
    raise ValueError(f"speech encoder module '{path}' has no known rate to pool it at; "
                     "the authors' module set does not fit this model")


def _hooked_channels(model, path: str, module, kind: str) -> tuple[int, int]:
    """``(channels, channel axis)`` of one module's output, from its attributes."""
    if kind == "Linear":
        return int(module.out_features), -1
    if kind == "Conv1d":
        return int(module.out_channels), 1
    if kind == "LayerNorm":
        if len(module.normalized_shape) != 1:
            raise ValueError(f"'{path}' normalises {tuple(module.normalized_shape)}, not one channel axis")
        return int(module.normalized_shape[0]), -1
    if kind == "Embedding":
        return int(module.embedding_dim), -1
    parent, _, own = path.rpartition(".")
    if own not in _GLU_INPUT or module.dim not in (1, -1):
        raise ValueError(f"GLU '{path}': which convolution it halves is not known")
    conv = model.get_submodule(f"{parent}.{_GLU_INPUT[own]}")
    return int(conv.out_channels) // 2, 1 if module.dim == 1 else -1


def _speech_llm_catalog(model, fam) -> Catalog:
    """A speech LLM's catalog (engine.model.speech_llm): the audio encoder's layers and then the
    projector (one layer after the last encoder layer) ranked together as the speech-side group,
    the token embedding as the text-side group, the language model's layers as the decoder group
    (``SPEECH_LLM_STACKS``)."""
    config = model.config
    components: list[Component] = []
    offsets = dict.fromkeys(GROUPS, 0)

    def add(stack, layer, name, path, dim, axis, position, reads="output"):
        _check_path(model, path)
        group = SPEECH_LLM_STACKS[stack]
        components.append(Component(stack, layer, name, path, int(dim), axis, position, offsets[group], reads, group))
        offsets[group] += int(dim)

    n_audio = len(model.get_submodule(fam.audio_layers))
    for i in range(n_audio):
        for name, width, axis in fam.audio_components:
            add("audio_encoder", i, name, f"{fam.audio_layers}.{i}.{name}", width(config), axis, "encoder_pooled")
    for path, width, axis in fam.projector:
        add("projector", n_audio, "projector." + path.rsplit(".", 1)[-1], path, width(config), axis,
            "projector_pooled")
    add("token_embedding", 0, "embed_tokens", fam.embed, config.text_config.hidden_size, -1, "prompt_pooled")
    for i in range(len(model.get_submodule(fam.lm_layers))):
        for name, module, width, reads in fam.lm_components:
            add("language_model", i, name, f"{fam.lm_layers}.{i}.{module}", width(config), -1, "decoder_step", reads)
    return Catalog(tuple(components))


def _check_path(model, path: str) -> None:
    try:
        model.get_submodule(path)
    except AttributeError:
        raise ValueError(f"component '{path}' is not a module of this {type(model).__name__}; "
                         "the catalog's component list does not fit this model family") from None


#: v1 medium's hyperparameters, as transformers' conversion script
#: (models/seamless_m4t/convert_fairseq2_to_hf.py, ``_load_hf_config("medium")``) builds the
#: config of facebook/hf-seamless-m4t-medium; everything else is SeamlessM4TConfig()'s default.
V1_MEDIUM = {"vocab_size": 256206, "t2u_vocab_size": 10082, "hidden_size": 1024,
             "max_position_embeddings": 4096, "encoder_layers": 12, "decoder_layers": 12,
             "encoder_ffn_dim": 4096, "decoder_ffn_dim": 4096, "t2u_encoder_layers": 4,
             "t2u_decoder_layers": 4, "speech_encoder_layers": 12}
#: speech-LLM families by their --config name: the checkpoint's pinned config (engine.model.speech_llm)
SPEECH_LLM_CONFIGS = {"qwen2-audio": "qwen2_audio", "voxtral": "voxtral"}
CONFIGS = ("large", "tiny", "v1-large", "v1-medium", *SPEECH_LLM_CONFIGS)
#: Hub ids whose architecture is one of the built-in configs (no download needed for counts).
HUB_CONFIGS = {"facebook/seamless-m4t-v2-large": "large", "facebook/hf-seamless-m4t-large": "v1-large",
               "facebook/hf-seamless-m4t-medium": "v1-medium", "Qwen/Qwen2-Audio-7B-Instruct": "qwen2-audio",
               "mistralai/Voxtral-Mini-3B-2507": "voxtral"}


def config_for(name: str):
    """Built-in configs: ``"large"`` -> ``SeamlessM4Tv2Config()`` (v2 Large), ``"v1-large"`` ->
    ``SeamlessM4TConfig()`` (facebook/hf-seamless-m4t-large; transformers' default is the
    large one), ``"v1-medium"`` -> facebook/hf-seamless-m4t-medium's, ``"tiny"`` -> the
    fixture's config; ``"qwen2-audio"`` and ``"voxtral"`` -> the pinned configs of
    Qwen/Qwen2-Audio-7B-Instruct and mistralai/Voxtral-Mini-3B-2507 (engine.model.speech_llm)."""
    from transformers import SeamlessM4TConfig, SeamlessM4Tv2Config

    if name in SPEECH_LLM_CONFIGS:
        return speech_llm.family(SPEECH_LLM_CONFIGS[name]).checkpoint_config()
    if name == "large":
        return SeamlessM4Tv2Config()
    if name == "v1-large":
        return SeamlessM4TConfig()
    if name == "v1-medium":
        return SeamlessM4TConfig(**V1_MEDIUM)
    if name == "tiny":
        return SeamlessM4Tv2Config.from_pretrained(TINY_MODEL_DIR)
    raise ValueError(f"config '{name}' is not one of {CONFIGS}")


def catalog_arguments(parser) -> None:
    parser.add_argument("--config", choices=CONFIGS, default="large",
                        help="built-in config to instantiate on the meta device (default: large)")
    parser.add_argument("--model", default=None, metavar="PATH_OR_ID",
                        help="read the config of this model directory or Hub id instead (no weights)")
    parser.add_argument("--extras", nargs="*", default=(), choices=EXTRAS,
                        help="add components beyond the paper's table")
    parser.add_argument("--modules", choices=("paper_table", "all_hooked"), default="paper_table",
                        help="the paper's component table (default) or every module the authors' code records")
    parser.add_argument("--json", action="store_true", help="print the full catalog as JSON before the counts")


def catalog_command(args) -> int:
    if getattr(args, "model", None):
        config = read_config(args.model)
    else:
        config = config_for(args.config)
    catalog = build_catalog(config, extras=tuple(getattr(args, "extras", ()) or ()),
                            modules=getattr(args, "modules", None) or "paper_table")
    if getattr(args, "json", False):
        print(json.dumps(catalog.to_json()))
    else:
        for stack in catalog.stacks():
            comps = catalog.stack(stack)
            per_layer: dict[int, int] = {}
            for c in comps:
                if c.layer >= 0:
                    per_layer[c.layer] = per_layer.get(c.layer, 0) + c.dim
            layer_counts = sorted(set(per_layer.values()))
            plural = lambda n, word: f"{n} {word}" + ("" if n == 1 else "s")  # noqa: E731
            outside = sum(c.dim for c in comps if c.layer < 0)  # layer -1: outside a numbered layer
            print(f"{stack}: {plural(len(per_layer), 'layer')}, {plural(len(comps), 'component')}, "
                  f"per layer {layer_counts}, " + (f"{outside:,} outside them, " if outside else "")
                  + f"{sum(c.dim for c in comps):,} neurons")
    print(json.dumps(catalog.counts()))
    return 0
