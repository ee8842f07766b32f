import os

if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    # a peer's dropped connection or absence is reported in one line by engine.pipeline.launch, not by
    # c10d's C++ log with its stack; TORCH_CPP_LOG_LEVEL=INFO brings that log back
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")

from engine.tools.cli import main

raise SystemExit(main())
