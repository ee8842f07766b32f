"""``engine.crossmodal`` is ``engine.science.crossmodal``: the name the README documents for notebooks."""
import sys

from engine.science import crossmodal

sys.modules[__name__] = crossmodal
