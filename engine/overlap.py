"""``engine.overlap`` is ``engine.science.overlap``: the name the README documents for notebooks."""
import sys

from engine.science import overlap

sys.modules[__name__] = overlap
