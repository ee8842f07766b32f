"""The pipeline's stages, one module each, in data-flow order:
data -> speech -> record -> rank -> compare -> steer -> report.

Each module exposes ``stage_<name>(run)``; it reads earlier stages' artifacts through
``engine.pipeline.run`` and writes only into ``run.dir(<name>)``. Stages never import each other or
``engine.pipeline.runner``, which orders and resumes them.
"""

#: The stages in data-flow order (each reads only stages before it).
STAGES = ("data", "speech", "record", "rank", "compare", "steer", "report")
