"""What the run looks like before anything is measured: the model's architecture (built on the
meta device: no weights, no network), the sentences when they are known offline, a speech LLM's
prompt lengths, and the counts the cost model multiplies (``Plan``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoProcessor

from engine.files import REPO_ROOT
from engine.model import speech_llm
from engine.model.catalog import HUB_CONFIGS, config_for
from engine.model.loader import parse_dtype, read_config
from engine.model.recorder import ModelInput
from engine.pipeline import config as config_mod
from engine.pipeline.definitions import recorded_activities
from engine.pipeline.inputs.corpus import select_embedded
from engine.pipeline.store import resolve_store_dtype
from engine.science.languages import get_language

BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}


def model_config(cfg: dict):
    """``(config, source)``: the run's model config and where it comes from (a local directory
    holding config.json, or the built-in config of a hub id); ``(None, model id)`` if neither."""
    path = Path(config_mod.model_path(cfg))
    if (path / "config.json").exists():
        return read_config(path), str(path)
    if cfg["model"]["id"] in HUB_CONFIGS:
        name = HUB_CONFIGS[cfg["model"]["id"]]
        return config_for(name), f"built-in config '{name}' of {cfg['model']['id']} (meta device)"
    return None, cfg["model"]["id"]


def model_shape(model, mcfg) -> dict:
    """What the cost model reads of an architecture (a model built on the meta device):
    hidden size, layer counts and parameter counts of the speech encoder (with a speech LLM's
    projector), the text encoder (an LM's token embedding: a lookup, no arithmetic), the shared
    decoder's layers and its output projection; for a speech LLM (``decoder_only``) also its
    audio window in encoder positions, its projector's parameters and positions over that window,
    and its tiny fixture."""
    def params(prefix):
        return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))

    if not speech_llm.is_speech_llm(mcfg):
        d = int(mcfg.hidden_size)
        return {"decoder_only": False, "d_model": d, "speech_width": d, "p_speech": params("speech_encoder"),
                "p_projector": 0, "projector_positions": 0,
                "p_text": params("text_encoder"), "p_dec": params("text_decoder"), "p_lm": int(mcfg.vocab_size) * d,
                "dec_layers": len(model.text_decoder.layers),
                "speech_layers": len(model.speech_encoder.encoder.layers), "fixture": None}
    fam = speech_llm.family(mcfg)
    tc, ac = mcfg.text_config, mcfg.audio_config
    d = int(tc.hidden_size)
    audio = fam.audio_layers.rsplit(".", 1)[0]  # the encoder module holding the layer list
    projector = {path.rsplit(".", 1)[0] for path, _, _ in fam.projector}
    # positions of the encoder window (stride-2 convolution over its feature frames), and the
    # projector's over that window (it runs on all of them, padding included)
    window = int(ac.max_source_positions)
    return {"decoder_only": True, "d_model": d, "speech_width": int(ac.d_model),
            "p_speech": params(audio + "."), "p_projector": sum(params(p + ".") for p in projector),
            "projector_positions": int(fam.projector_valid(torch.tensor([window]))[0]), "p_text": 0,
            "p_dec": params(fam.lm_layers + "."), "p_lm": int(tc.vocab_size) * d,
            "dec_layers": len(model.get_submodule(fam.lm_layers)),
            "speech_layers": len(model.get_submodule(fam.audio_layers)), "window_frames": window,
            "fixture": REPO_ROOT / "fixtures" / f"tiny_{fam.model_type}"}


def selection(cfg: dict):
    """The sentences the data stage will select (``engine.pipeline.inputs.corpus.Selection``), when
    they are known without network (the embedded corpus); None otherwise."""
    if cfg["data"]["source"] != "embedded":
        return None
    d = cfg["data"]
    return select_embedded(d["langs"], n=d["n_identify"] + d["n_steer"], seed=d["seed"], n_steer=d["n_steer"])


def prompt_widths(cfg: dict, mcfg, sentences: dict | None, fixture: Path) -> dict:
    """A speech LLM's prompt lengths in tokens, from the run's own processor when it can be read
    without network (a local or cached model), else from its family's tiny fixture processor:
    ``speech_fixed`` + ``speech_per_s`` x seconds (the chat template, the S2T instruction and the
    audio tokens as the processor expands them: Qwen2-Audio the utterance's own, Voxtral its
    whole 30 s window) and ``text`` (the T2T prompt of the run's sentences, mean of the longest
    language; None with the fixture, whose tiny tokenizer splits words into many more pieces).
    ``source`` says which processor it was."""
    fam = speech_llm.family(mcfg)
    try:
        processor = AutoProcessor.from_pretrained(config_mod.model_path(cfg), revision=cfg["model"]["revision"] or None,
                                                  local_files_only=True)  # an estimate never downloads
        source, own = "the run's processor", True
    except Exception:  # noqa: BLE001 - any failure to read it offline means: use the fixture's
        processor, source, own = AutoProcessor.from_pretrained(str(fixture)), f"the fixture's ({fixture.name})", False
    instruction = cfg["prompts"]["S2T"].format(target=get_language("eng").name)

    def width(item, prompt):
        return int(fam.build_prompts(processor, [item], [prompt])["input_ids"].shape[1])
    wav = (0.1 * np.random.default_rng(0).standard_normal(3 * 16000)).astype(np.float32)
    one, three = (width(ModelInput("s/deu/S2T", "deu", "speech", "eng", waveform=wav[:16000 * n]), instruction)
                  for n in (1, 3))
    text = None
    if own and sentences:
        prompt = cfg["prompts"]["T2T"].format(target=get_language("eng").name)
        text = max(float(np.mean([width(ModelInput("t/x/T2T", lang, "text", "eng", text=t), prompt) for t in ts[:5]]))
                   for lang, ts in sentences.items())
    return {"speech_fixed": one - (three - one) / 2, "speech_per_s": (three - one) / 2, "text": text, "source": source}


@dataclass(frozen=True)
class Plan:
    """What a run of ``cfg`` is, before anything is measured: its launch, its model, the counts
    the cost model multiplies (examples, neurons, batches) and the devices and dtypes it computes
    and stores in. ``plan_run`` builds it; the properties read ``cfg`` under the names the cost
    formulas use."""
    cfg: dict
    nodes: int
    gpus_per_node: int
    mcfg: Any            # the model's transformers config
    source: str          # where that config comes from, as printed (``model_config``)
    n_params: int
    shape: dict          # ``model_shape``
    neurons: dict        # catalog counts: speech_encoder, text_encoder, text_decoder, total
    measure_gpu: bool    # a CUDA run, and a GPU is visible here to measure on
    tdtype: Any          # torch dtype of the run's arithmetic
    sdtype: str          # the activation store's dtype, "auto" resolved
    sel: Any             # ``selection(cfg)``: the sentences when known offline, else None

    @property
    def world(self) -> int:
        """Ranks of the launch: nodes x GPUs per node."""
        return self.nodes * self.gpus_per_node

    @property
    def langs(self) -> list[str]:
        return list(self.cfg["data"]["langs"])

    @property
    def steps(self) -> list[int]:
        return list(self.cfg["record"]["steps"])

    @property
    def L(self) -> int:
        """Study languages."""
        return len(self.langs)

    @property
    def S(self) -> int:
        """Recorded generation steps."""
        return len(self.steps)

    @property
    def n_id(self) -> int:
        """Examples per recorded task: identification sentences x languages."""
        return self.cfg["data"]["n_identify"] * self.L

    @property
    def n_steer(self) -> int:
        """Held-out examples: steering sentences x languages."""
        return self.cfg["data"]["n_steer"] * self.L

    @property
    def activities(self) -> int:
        """Decoder activities recorded per step (position, prefix means, or both:
        ``definitions.recorded_activities``); each is a decoder matrix of its own."""
        return len(recorded_activities(self.cfg))

    @property
    def n_dec(self) -> int:
        """Decoder neurons per recorded step."""
        return self.neurons["text_decoder"]

    @property
    def n_enc(self) -> dict[str, int]:
        """Encoder neurons by modality."""
        return {"speech": self.neurons["speech_encoder"], "text": self.neurons["text_encoder"]}

    @property
    def width(self) -> dict[str, int]:
        """Recorded neurons per example of each task: its encoder and the decoder at every step."""
        n_enc, S, n_dec = self.n_enc, self.S, self.n_dec
        return {"S2T": n_enc["speech"] + S * n_dec, "T2T": n_enc["text"] + S * n_dec, "ASR": n_enc["speech"] + S * n_dec}

    @property
    def recorder_batch(self) -> int:
        """Examples per batch of the recorder calibration: the run's batch size, or all its
        examples when fewer (``calibrate.recorder``'s per-batch cost is for this many)."""
        return max(1, min(self.bs, max(self.n_id, self.n_steer)))

    @property
    def decoder_only(self) -> bool:
        """A speech LLM: its decoder reads a prompt instead of cross-attending to an encoder."""
        return self.shape["decoder_only"]

    @property
    def wbytes(self) -> int:
        """Bytes per weight in the run's compute dtype."""
        return BYTES.get(self.cfg["model"]["dtype"], 4)

    @property
    def weight_bytes(self) -> int:
        return self.n_params * self.wbytes

    @property
    def convert_bytes(self) -> int:
        """Bytes of the checkpoint's weights as stored, when stored in another type than the run
        computes in (a bf16 checkpoint run in fp32); 0 otherwise."""
        stored = str(getattr(self.mcfg, "dtype", None) or "").removeprefix("torch.")
        return self.n_params * BYTES[stored] if stored in BYTES and stored != self.cfg["model"]["dtype"] else 0

    @property
    def bs(self) -> int:
        """Examples per model batch."""
        return self.cfg["model"]["batch_size"]

    @property
    def rpb(self) -> int:
        """Rows per activation-store block."""
        return self.cfg["record"]["rows_per_block"]

    @property
    def cpc(self) -> int:
        """Columns per neuron chunk of the rank and compare stages."""
        return self.cfg["record"]["cols_per_chunk"]

    @property
    def n_boot(self) -> int:
        return self.cfg["rank"]["n_boot"]

    @property
    def ks(self) -> list[int]:
        return list(self.cfg["rank"]["k_sweep"])

    @property
    def k(self) -> int:
        return self.cfg["rank"]["k"]

    @property
    def device(self) -> str:
        return self.cfg["model"]["device"]

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def gpu_assumed(self) -> bool:
        """A CUDA run with no GPU visible here: the stated GPU model replaces measurement."""
        return self.on_gpu and not self.measure_gpu

    @property
    def mm_device(self) -> str:
        """Where the matrix products are measured."""
        return "cuda" if self.measure_gpu else "cpu"

    @property
    def rank_device(self) -> str:
        """Where exact AP and the bootstrap are measured: the run's device if it is here."""
        return self.device if self.measure_gpu or not self.on_gpu else "cpu"

    @property
    def sb(self) -> int:
        """Bytes per stored activation."""
        return BYTES[self.sdtype]

    @property
    def backend(self) -> str:
        """The speech stage's synthesis backend."""
        return self.cfg["speech"]["backend"]

    @property
    def decode_batches(self) -> set[int]:
        """Every decoding batch size of the run: identification batches over all of a task's rows,
        steering batches over one (source, task)'s held-out rows."""
        bs, n_id, per_src = self.bs, self.n_id, self.cfg["data"]["n_steer"]
        return {min(bs, n_id - i) for i in range(0, n_id, bs)} | {min(bs, per_src - i) for i in range(0, per_src, bs)}


def plan_run(cfg: dict, nodes: int, gpus_per_node: int, mcfg, source: str, model, cat) -> Plan:
    """The ``Plan`` of a run of ``cfg`` on ``nodes`` x ``gpus_per_node`` ranks, for its ``model``
    (built on the meta device from ``mcfg``) and that model's neuron catalog ``cat``."""
    on_gpu = cfg["model"]["device"].startswith("cuda")
    tdtype = parse_dtype(cfg["model"]["dtype"], torch.device("cuda" if on_gpu else "cpu"))
    return Plan(cfg=cfg, nodes=nodes, gpus_per_node=gpus_per_node, mcfg=mcfg, source=source,
                n_params=sum(p.numel() for p in model.parameters()), shape=model_shape(model, mcfg),
                neurons={"speech_encoder": cat.n_neurons("speech_encoder"), "text_encoder": cat.n_neurons("text_encoder"),
                         "text_decoder": cat.n_neurons("text_decoder"), "total": cat.total},
                measure_gpu=on_gpu and torch.cuda.is_available(), tdtype=tdtype,
                # "auto": the model's 16-bit type; float32 where the definitions keep the authors' precision
                sdtype=("float32" if cfg["definitions"]["precision"] == "float32"
                        else resolve_store_dtype(cfg["record"]["store_dtype"], tdtype)),
                sel=selection(cfg))
