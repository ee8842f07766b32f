"""``python -m engine estimate``: print a profile's estimate, one line per figure, then its JSON."""
from __future__ import annotations

import json

from engine.pipeline import config as config_mod
from engine.tools.estimate.cost import estimate


def estimate_arguments(parser) -> None:
    """The profile and its ``--set`` overrides, and the launch's ``--nodes`` and ``--gpus-per-node``."""
    config_mod.profile_arguments(parser)
    parser.add_argument("--nodes", type=int, default=1, help="nodes of the torchrun launch (default 1)")
    parser.add_argument("--gpus-per-node", type=int, default=1,
                        help="ranks per node, one GPU each (torchrun --nproc_per_node; default 1)")


def estimate_command(args) -> int:
    """Print the estimate's lines, then the rest of it as one JSON line; returns 0."""
    cfg = config_mod.load_profile(args.profile, args.overrides)
    result = estimate(cfg, nodes=args.nodes, gpus_per_node=args.gpus_per_node)
    for line in result.pop("lines"):
        print(line)
    print(json.dumps(result, sort_keys=True))
    return 0
