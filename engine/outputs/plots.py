"""The report's figures as matplotlib Figures, drawn from analysis.json sections.

Each function takes the section of an analysis dict it draws (``analysis["overlap"]``,
``["k_sweep"]``, ``["distribution"]``, ``["steering"]``) and returns a
``matplotlib.figure.Figure``; the claims report renders exactly these to PNG, and
``engine.open_run(...).plot_*`` calls them, so a notebook draws the same pictures the report
shows. ``steps`` selects decoding steps (default: every step present). ``paper`` adds the
paper's numbers where its text gives them (``paper_values(registry)[name]`` is what the
report passes; None draws ours alone). Figures are created without pyplot's global state (no
window opens, and nothing accumulates in a notebook unless it is displayed).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from engine.errors import UserError
from engine.model.catalog import group_labels
from engine.science.scripts import pair_scripts


def _figure(figsize):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def _steps(section: Mapping, steps: Sequence | None) -> list[str]:
    present = sorted(section, key=int)
    if steps is None:
        return present
    wanted = [str(s) for s in steps]
    absent = [s for s in wanted if s not in present]
    if absent:
        raise UserError(f"step(s) {absent} not in this run; it has steps {present}")
    return wanted


#: The figures of the paper's numbers each function accepts (``paper_values``).
FIGURES = ("overlap", "spearman", "k_sweep", "distribution", "control_rate", "effect_ratio", "fasttext")


def paper_values(registry: Mapping) -> dict[str, dict]:
    """The paper's numbers for each figure, from the claims registry (``engine.outputs.claims.load_registry()``).

    Returns ``{figure name: kwargs for its function's paper=}``; a figure whose paper has no
    numbers (Fig. 6 is stated in words) maps to None.
    """
    c = registry["claims"]
    t1 = {}
    for cell in c["T1"]["paper"]["cells"]:
        target = pair_scripts(cell["src"], cell["tgt"])[1]  # Table 1 gives the share of each script
        t1[(cell["src"], cell["tgt"], cell["task"], int(cell["step"]))] = cell[target]
    t4 = {(x["src"], x["tgt"], x["task"], int(x["step"])): x["ft_tgt"] for x in c["T4"]["paper"]["cells"]}
    t3 = {(x["src"], x["tgt"], int(x["step"])): x["ratio"] for x in c["T3"]["paper"]["cells"]}
    return {
        "overlap": dict(c["R1"]["paper"]["diagonal_ratio"]),
        "spearman": dict(c["R5"]["paper"]["spearman_diag_concentration"]),
        "k_sweep": None,
        "distribution": {"speech_layers": tuple(c["R7"]["paper"]["layers"]),
                         "text_peak": c["R8"]["paper"]["peak_layer"],
                         "self": list(c["R9"]["paper"]["self"]), "cross": list(c["R9"]["paper"]["cross"])},
        "control_rate": t1, "fasttext": t4, "effect_ratio": t3,
    }


def distribution(dist: Mapping, steps: Sequence | None = None, paper: Mapping | None = None,
                 model_type: str | None = None):
    """Bars of top-k counts per layer and per component (paper Figs. 2 and 3).

    ``dist``: analysis["distribution"] (speech_encoder, text_encoder, text_decoder[t][modality]).
    Components are shown as count / expected count under uniform sampling by size (1 = as
    expected), the paper's over/under-representation. ``paper``: {"speech_layers": (lo, hi),
    "text_peak": layer, "self": [...], "cross": [...]}: the paper's speech-encoder band is
    shaded, its text-encoder peak outlined, and the decoder's self- and cross-attention
    components (Fig. 3's) coloured apart. ``model_type`` names the panels for what the groups
    are in that model (``engine.model.catalog.group_labels``; None: SeamlessM4T's stacks).
    """
    label = group_labels(model_type)
    panels = [("speech_encoder", label["speech_encoder"], dist["speech_encoder"]),
              ("text_encoder", label["text_encoder"], dist["text_encoder"])]
    for t in _steps(dist.get("text_decoder", {}), steps):
        for mod, d in dist["text_decoder"][t].items():
            panels.append(("text_decoder", f"{label['text_decoder']} t={t} ({mod})", d))
    fig = _figure((12, 2.3 * len(panels)))
    axes = fig.subplots(len(panels), 2, squeeze=False)
    lang = dist.get("lang", "")
    self_c, cross_c = set((paper or {}).get("self", ())), set((paper or {}).get("cross", ()))
    for (group, title, d), (ax_l, ax_c) in zip(panels, axes):
        layers = d["by_layer"]
        bars = ax_l.bar(range(len(layers)), layers, color="#4472c4")
        ax_l.set_title(f"{title}: {lang} top-{dist.get('k', '')} per layer", fontsize=9)
        ax_l.set_xlabel("layer (0-based)", fontsize=8)
        ax_l.set_xticks(range(len(layers)))
        if paper and group == "speech_encoder" and paper.get("speech_layers"):
            lo, hi = paper["speech_layers"]
            ax_l.axvspan(lo - 0.5, hi + 0.5, color="#999999", alpha=0.2, lw=0, label=f"paper: layers {lo}–{hi}")
            ax_l.legend(fontsize=7, loc="upper right")
        if paper and group == "text_encoder" and paper.get("text_peak") is not None \
                and paper["text_peak"] < len(layers):
            bars[paper["text_peak"]].set_edgecolor("k")
            bars[paper["text_peak"]].set_linewidth(1.5)
            bars[paper["text_peak"]].set_label(f"paper's peak: layer {paper['text_peak']}")
            ax_l.legend(fontsize=7, loc="upper right")
        counts, sizes = d["by_component"], d.get("component_sizes", {})
        names = list(counts)
        total_c, total_s = sum(counts.values()) or 1, sum(sizes.values()) or 1
        enrich = [(counts[n] / total_c) / (sizes[n] / total_s) if sizes.get(n) else 0.0 for n in names]
        decoder = group == "text_decoder"  # Fig. 3's component names are the decoder's
        colours = ["#4472c4" if decoder and n in self_c else "#c00000" if decoder and n in cross_c else "#ed7d31"
                   for n in names]
        ax_c.barh(range(len(names)), enrich, color=colours)
        ax_c.axvline(1.0, color="k", lw=0.8, ls="--")
        ax_c.set_yticks(range(len(names)))
        ax_c.set_yticklabels(names, fontsize=6)
        ax_c.set_title(f"{title}: per component (count / size-expected)", fontsize=9)
    fig.tight_layout()
    return fig


def _heatmaps(overlap: Mapping, key: str, fmt: str, cmap: str, steps, paper: Mapping | None):
    steps = _steps(overlap, steps)
    fig = _figure((4.2 * len(steps), 3.8))
    axes = fig.subplots(1, len(steps), squeeze=False)
    for t, ax in zip(steps, axes[0]):
        M = np.asarray(overlap[t][key], dtype=float)
        langs = overlap[t]["langs"]
        im = ax.imshow(M, cmap=cmap)
        ax.set_xticks(range(len(langs)))
        ax.set_xticklabels(langs, fontsize=8)
        ax.set_yticks(range(len(langs)))
        ax.set_yticklabels(langs, fontsize=8)
        ax.set_xlabel("text", fontsize=8)
        ax.set_ylabel("speech", fontsize=8)
        for i in range(M.shape[0]):
            for j in range(M.shape[1]):
                ax.text(j, i, format(M[i, j], fmt), ha="center", va="center", fontsize=7,
                        color="white" if M[i, j] > M.mean() else "black")
        stat = overlap[t].get("diagonal_ratio" if key == "matrix" else "spearman_diag_concentration")
        name = "diagonal ratio" if key == "matrix" else "diagonal concentration"
        title = f"t={t}  {name} " + ("n/a" if stat is None else f"{100 * stat:.1f}%")
        if paper and paper.get(str(t)) is not None:
            title += f" (paper {100 * paper[str(t)]:.1f}%)"
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def overlap(section: Mapping, steps: Sequence | None = None, paper: Mapping | None = None):
    """O_t[i][j] = |TopK_speech(i) ∩ TopK_text(j)| per step, annotated (paper Fig. 4).

    ``section``: analysis["overlap"], {step: {"matrix", "langs", "diagonal_ratio", ...}}.
    ``paper``: {step: diagonal ratio}, shown beside ours in each panel's title.
    """
    return _heatmaps(section, "matrix", ".0f", "Blues", steps, paper)


def spearman(section: Mapping, steps: Sequence | None = None, paper: Mapping | None = None):
    """Spearman ρ between speech and text AP vectors per step, annotated (paper Fig. 5).

    ``paper``: {step: diagonal concentration}, shown beside ours in each panel's title.
    """
    return _heatmaps(section, "spearman", ".2f", "RdBu_r", steps, paper)


def k_sweep(section: Mapping, steps: Sequence | None = None):
    """Diagonal overlap ratio against k, one line per step, log-scaled k (paper Fig. 6).

    ``section``: analysis["k_sweep"], {"ks": [...], "diagonal_ratio": {step: [...]},
    optionally "diagonal_ratio_ci": {step: [[lo, hi], ...]}} (drawn as a band).
    """
    fig = _figure((6, 3.6))
    ax = fig.subplots()
    ks = section["ks"]
    cis = section.get("diagonal_ratio_ci") or {}
    for t in _steps(section["diagonal_ratio"], steps):
        line, = ax.plot(ks, section["diagonal_ratio"][t], marker="o", label=f"t={t}")
        ci = cis.get(t)
        if ci and all(c is not None and None not in c for c in ci):
            lo, hi = np.asarray(ci, dtype=float).T
            ax.fill_between(ks, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel("diagonal overlap ratio")
    ax.legend()
    fig.tight_layout()
    return fig


def _median_rows(steering: Mapping) -> list[Mapping]:
    return [r for r in steering.get("rows", []) if r.get("intervention", "median") == "median"
            and r.get("step") is not None]


def _per_pair(steering: Mapping, value: str, paper: Mapping | None, ylabel: str, title: str, steps):
    rows = _median_rows(steering)
    pairs = list(dict.fromkeys((r["src"], r["tgt"]) for r in rows))
    if not pairs:
        raise ValueError("the steering section has no median-intervention rows")
    present = sorted({int(r["step"]) for r in rows})
    if steps is not None:
        absent = [int(s) for s in steps if int(s) not in present]
        if absent:
            raise UserError(f"step(s) {absent} not in this run; it has steps {present}")
        present = [int(s) for s in steps]
    by = {(r["src"], r["tgt"], r["task"], int(r["step"])): r.get(value) for r in rows}
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    cols = min(4, len(pairs))
    nrows = -(-len(pairs) // cols)
    fig = _figure((3.0 * cols, 2.4 * nrows + 0.4))
    axes = fig.subplots(nrows, cols, squeeze=False)
    colours = ("#4472c4", "#ed7d31", "#70ad47", "#7030a0")
    for n, (src, tgt) in enumerate(pairs):
        ax = axes[n // cols][n % cols]
        for i, task in enumerate(tasks):
            ys = [by.get((src, tgt, task, t)) for t in present]
            ax.plot(present, [np.nan if y is None else y for y in ys], marker="o", color=colours[i % 4],
                    label=f"{task} (ours)")
            if paper:
                ps = [paper.get((src, tgt, task, t)) for t in present]
                if any(p is not None for p in ps):
                    ax.plot(present, [np.nan if p is None else p for p in ps], marker="s", ls="--",
                            mfc="none", color=colours[i % 4], label=f"{task} (paper)")
        ax.set_title(f"{src}→{tgt}", fontsize=9)
        ax.set_xticks(present)
        ax.set_ylim(-5, 105)
        ax.set_xlabel("step t", fontsize=8)
        if n % cols == 0:
            ax.set_ylabel(ylabel, fontsize=8)
    for n in range(len(pairs), nrows * cols):
        axes[n // cols][n % cols].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.tight_layout()
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(labels), fontsize=8,
               frameon=False, title=title, title_fontsize=10)
    return fig


def control_rate(steering: Mapping, steps: Sequence | None = None, paper: Mapping | None = None):
    """Control rate (%) against the step whose neurons steer, per pair and task (paper Table 1).

    ``steering``: analysis["steering"]; the median-intervention rows' ``control_rate`` (each
    pair's own metric: the target script's share, or language ID for a same-script pair).
    ``paper``: {(src, tgt, task, step): rate}, drawn dashed with hollow markers.
    """
    return _per_pair(steering, "control_rate", paper, "control rate (%)",
                     "Control rate after median-value steering (Table 1)", steps)


def fasttext(steering: Mapping, steps: Sequence | None = None, paper: Mapping | None = None):
    """fastText probability (%) of the target language, per pair and task (paper Table 4).

    ``paper``: {(src, tgt, task, step): probability}, drawn dashed with hollow markers.
    """
    return _per_pair(steering, "ft_tgt", paper, "fastText P(target) (%)",
                     "fastText target-language probability after steering (Table 4)", steps)


def effect_ratio(steering: Mapping, paper: Mapping | None = None):
    """Cross-modal effect ratio CR_TR / CR_ASR per pair and step (paper Table 3).

    ``steering``: analysis["steering"] (its ``effect_ratio.pairs``; pairs whose ASR rate is
    under tau have no ratio and are drawn as absent). ``paper``: {(src, tgt, step): ratio},
    hatched bars beside ours.
    """
    pairs = steering.get("effect_ratio", {}).get("pairs", [])
    if not pairs:
        raise ValueError("the steering section has no effect-ratio pairs")
    steps = sorted({int(p["step"]) for p in pairs})
    names = list(dict.fromkeys(f"{p['src']}→{p['tgt']}" for p in pairs))
    ours = {(f"{p['src']}→{p['tgt']}", int(p["step"])): p.get("ratio") for p in pairs}
    fig = _figure((min(14.0, max(6.0, 0.5 * len(names) * len(steps))), 3.4))
    ax = fig.subplots()
    width = 0.8 / (len(steps) * (2 if paper else 1))
    colours = ("#4472c4", "#ed7d31", "#70ad47", "#7030a0")
    x = np.arange(len(names))
    slot = 0
    for i, t in enumerate(steps):
        ys = [ours.get((n, t)) for n in names]
        ax.bar(x + slot * width, [np.nan if y is None else y for y in ys], width, color=colours[i % 4],
               label=f"t={t} (ours)")
        slot += 1
        if paper:
            ps = [paper.get((n.split("→")[0], n.split("→")[1], t)) for n in names]
            ax.bar(x + slot * width, [np.nan if p is None else p for p in ps], width, color="white",
                   edgecolor=colours[i % 4], hatch="//", label=f"t={t} (paper)")
            slot += 1
    ax.set_xticks(x + width * (slot - 1) / 2)
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylabel("effect ratio CR_TR / CR_ASR")
    ax.legend(fontsize=7, ncol=len(steps) * (2 if paper else 1))
    ax.set_title("Cross-modal effect ratio (Table 3); no bar: ASR rate under tau", fontsize=9)
    fig.tight_layout()
    return fig
