"""Where a language's top-k neurons sit in the model: counts per layer and per component."""
from __future__ import annotations

import numpy as np

from engine.science.ranking import top_k


def distribution(ap_row: np.ndarray, components, k: int, separation: np.ndarray | None = None) -> dict:
    """Where the top-k neurons of one AP row live (paper Figs. 2 and 3).

    ``ap_row`` ``[N]``: one language's AP over a stack's neurons; ``components``: the stack's
    components in catalog order, anything with ``layer``, ``name``, ``offset`` and ``dim`` (the
    catalog's ``Component``); ``k`` and ``separation`` as ``ranking.top_k`` takes them. Returns
    ``{"by_layer": [count per layer], "by_component": {name: count}, "component_sizes": {name:
    neurons}}``; a component name sums over layers, and the ``by_component`` counts sum to
    ``k``. A component outside a numbered layer (``layer < 0``: a stack's final layer norm, the
    speech encoder's adapter) counts in ``by_component`` only, as the authors' figures count such
    modules as "other" and do not draw them.
    """
    chosen = np.sort(top_k(ap_row, k, separation))
    n_layers = max(c.layer for c in components) + 1
    by_layer = [0] * n_layers
    by_component: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for comp in components:
        n = int(np.count_nonzero((chosen >= comp.offset) & (chosen < comp.offset + comp.dim)))
        if comp.layer >= 0:
            by_layer[comp.layer] += n
        by_component[comp.name] = by_component.get(comp.name, 0) + n
        sizes[comp.name] = sizes.get(comp.name, 0) + comp.dim
    return {"by_layer": by_layer, "by_component": by_component, "component_sizes": sizes}
