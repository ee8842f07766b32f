"""The paper's figures and tables as the report shows them: one ``engine.outputs.plots`` figure
each, as PNG, with its heading, the paper's values in words, and the claims whose evidence it is
(each claim names its figure: ``engine.outputs.claims.Claim.figure``)."""
from __future__ import annotations

import io

from engine.outputs import plots
from engine.outputs.claims import CLAIMS, load_registry
from engine.outputs.glance import percent


def png(fig) -> bytes:
    """A matplotlib figure as the PNG bytes the report embeds (90 dpi, tight)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


#: The paper's figures and tables, in the paper's order of reading: name -> (heading, what the
#: paper gives). Each is drawn by the ``engine.outputs.plots`` function of that name.
_FIGURE_TEXT = {
    "overlap": ("Figure 4: cross-modal overlap of top-k neurons per decoding step",
                "Paper: diagonal ratio {overlap} at t = 1, 6, 11 (each panel's title gives ours beside it)."),
    "spearman": ("Figure 5: Spearman correlation of speech and text AP vectors per step",
                 "Paper: diagonal concentration {spearman} at t = 1, 6, 11 (each panel's title gives ours beside it)."),
    "k_sweep": ("Figure 6: diagonal overlap ratio against k (bands: 95% intervals)",
                "The paper states this figure in words only: t = 1 highest at every k, a drop at t = 6 and a "
                "partial recovery at t = 11."),
    "distribution": ("Figures 2 and 3: where the German top-k neurons live, per layer and per component",
                     "Paper: speech encoder layers {layers} shaded; text encoder peak at layer {peak} outlined; "
                     "decoder self-attention components in blue, cross-attention in red (the paper: mostly self "
                     "at t = 1, mostly cross at t = 11). Decoder cross_attention.k_proj/v_proj are step-invariant "
                     "(mean over encoder positions), so their share moves across steps only through other "
                     "components."),
    "control_rate": ("Table 1: control rate after median-value steering",
                     "Dashed, hollow: the paper's Table 1. The table below gives every cell, measured (paper)."),
    "effect_ratio": ("Table 3: cross-modal effect ratio", "Hatched: the paper's Table 3."),
    "fasttext": ("Table 4: fastText probability of the target language",
                 "Dashed, hollow: the paper's Table 4."),
}

#: name -> (heading, what the paper gives, the claims whose evidence it is).
FIGURES = {name: (heading, text, tuple(c.id for c in CLAIMS.values() if c.figure == name))
           for name, (heading, text) in _FIGURE_TEXT.items()}
#: figure -> heading.
FIGURE_TITLES = {name: spec[0] for name, spec in FIGURES.items()}
#: claim -> the figure with its evidence.
CLAIM_FIGURE = {c.id: c.figure for c in CLAIMS.values()}


def _draw(name: str, analysis: dict, paper: dict | None):
    if name == "overlap":
        return plots.overlap(analysis["overlap"], paper=paper)
    if name == "spearman":
        return plots.spearman(analysis["overlap"], paper=paper)
    if name == "k_sweep":
        return plots.k_sweep(analysis["k_sweep"])
    if name == "distribution":
        return plots.distribution(analysis["distribution"], paper=paper,
                                  model_type=(analysis.get("meta") or {}).get("model_type"))
    if name == "effect_ratio":
        return plots.effect_ratio(analysis["steering"], paper=paper)
    return getattr(plots, name)(analysis["steering"], paper=paper)


def figure_overlap(overlap: dict, paper: dict | None = None) -> bytes:
    """``engine.outputs.plots.overlap`` as PNG."""
    return png(plots.overlap(overlap, paper=paper))


def figure_spearman(overlap: dict, paper: dict | None = None) -> bytes:
    """``engine.outputs.plots.spearman`` as PNG."""
    return png(plots.spearman(overlap, paper=paper))


def figure_k_sweep(k_sweep: dict) -> bytes:
    """``engine.outputs.plots.k_sweep`` as PNG."""
    return png(plots.k_sweep(k_sweep))


def figure_distribution(distribution: dict, paper: dict | None = None) -> bytes:
    """``engine.outputs.plots.distribution`` as PNG."""
    return png(plots.distribution(distribution, paper=paper))


def make_figures(analysis: dict, registry: dict | None = None) -> tuple[dict[str, bytes], dict[str, str]]:
    """All figures the analysis has data for, with the paper's numbers from ``registry``:
    (name -> PNG bytes, name -> why missing)."""
    if registry is None:
        registry = load_registry()
    paper = plots.paper_values(registry)
    figures, missing = {}, {}
    for name in FIGURES:
        try:
            figures[name] = png(_draw(name, analysis, paper.get(name)))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            missing[name] = f"not drawn: the artifact lacks the data ({type(exc).__name__}: {exc})"
    return figures, missing


def caption(name: str, registry: dict) -> str:
    c = registry["claims"]
    text = FIGURES[name][1]
    joined = lambda d: " / ".join(percent(d[t], fraction=True) for t in ("1", "6", "11") if t in d)  # noqa: E731
    return text.format(overlap=joined(c["R1"]["paper"]["diagonal_ratio"]),
                       spearman=joined(c["R5"]["paper"]["spearman_diag_concentration"]),
                       layers="–".join(str(x) for x in c["R7"]["paper"]["layers"]),
                       peak=c["R8"]["paper"]["peak_layer"])
