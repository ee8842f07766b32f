"""The report's figures as matplotlib Figures, drawn from analysis.json sections.

Each function takes the section of an analysis dict it draws (``analysis["overlap"]``,
``["k_sweep"]``, ``["distribution"]``) and returns a ``matplotlib.figure.Figure``; the claims
report renders exactly these to PNG, and ``engine.open_run(...).plot_*`` calls them, so a
notebook draws the same pictures the report shows. ``steps`` selects decoding steps (default:
every step present). Figures are created without pyplot's global state (no window opens, and
nothing accumulates in a notebook unless it is displayed).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


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
        from engine.errors import UserError

        raise UserError(f"step(s) {absent} not in this run; it has steps {present}")
    return wanted


def distribution(dist: Mapping, steps: Sequence | None = None):
    """Bars of top-k counts per layer and per component (paper Figs. 2 and 3).

    ``dist``: analysis["distribution"] (speech_encoder, text_encoder, text_decoder[t][modality]).
    Components are shown as count / expected count under uniform sampling by size (1 = as
    expected), the paper's over/under-representation.
    """
    panels = [("speech encoder", dist["speech_encoder"]), ("text encoder", dist["text_encoder"])]
    for t in _steps(dist.get("text_decoder", {}), steps):
        for mod, d in dist["text_decoder"][t].items():
            panels.append((f"decoder t={t} ({mod})", d))
    fig = _figure((12, 2.3 * len(panels)))
    axes = fig.subplots(len(panels), 2, squeeze=False)
    lang = dist.get("lang", "")
    for (title, d), (ax_l, ax_c) in zip(panels, axes):
        layers = d["by_layer"]
        ax_l.bar(range(len(layers)), layers, color="#4472c4")
        ax_l.set_title(f"{title}: {lang} top-{dist.get('k', '')} per layer", fontsize=9)
        ax_l.set_xlabel("layer (0-based)", fontsize=8)
        ax_l.set_xticks(range(len(layers)))
        counts, sizes = d["by_component"], d.get("component_sizes", {})
        names = list(counts)
        total_c, total_s = sum(counts.values()) or 1, sum(sizes.values()) or 1
        enrich = [(counts[n] / total_c) / (sizes[n] / total_s) if sizes.get(n) else 0.0 for n in names]
        ax_c.barh(range(len(names)), enrich, color="#ed7d31")
        ax_c.axvline(1.0, color="k", lw=0.8, ls="--")
        ax_c.set_yticks(range(len(names)))
        ax_c.set_yticklabels(names, fontsize=6)
        ax_c.set_title(f"{title}: per component (count / size-expected)", fontsize=9)
    fig.tight_layout()
    return fig


def _heatmaps(overlap: Mapping, key: str, fmt: str, cmap: str, steps):
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
        ax.set_title(f"t={t}" + (f"  diag={stat:.3f}" if stat is not None else ""), fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def overlap(section: Mapping, steps: Sequence | None = None):
    """O_t[i][j] = |TopK_speech(i) ∩ TopK_text(j)| per step, annotated (paper Fig. 4).

    ``section``: analysis["overlap"], {step: {"matrix", "langs", "diagonal_ratio", ...}}.
    """
    return _heatmaps(section, "matrix", ".0f", "Blues", steps)


def spearman(section: Mapping, steps: Sequence | None = None):
    """Spearman ρ between speech and text AP vectors per step, annotated (paper Fig. 5)."""
    return _heatmaps(section, "spearman", ".2f", "RdBu_r", steps)


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
