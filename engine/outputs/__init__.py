"""What a reader sees: the paper's claims judged on an analysis (``claims``), their one line each
(``glance``), the figures (``plots``), the claims report (``report``) and a finished run opened
read-only (``results``, ``engine.open_run``). Imports the pipeline layer and below.
"""
