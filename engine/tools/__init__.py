"""Commands: the command line (``cli``), resource estimates (``estimate``), rehearsals on a
random model of the real architecture (``rehearse``), regression baselines and their noise study
(``baselines``) and the benchmarks (``benchmarks``). May import every layer.
"""
