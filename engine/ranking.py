"""``engine.ranking`` is ``engine.science.ranking``: the name the README documents for notebooks."""
import sys

from engine.science import ranking

sys.modules[__name__] = ranking
