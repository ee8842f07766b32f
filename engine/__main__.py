import os

if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    # a peer's dropped connection is reported in one line by engine.ranks, not by c10d's C++ warning
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")

from engine.cli import main

raise SystemExit(main())
