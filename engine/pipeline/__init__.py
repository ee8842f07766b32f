"""Runs and their stages: settings (``config``), one run's keys, directories and artifacts
(``run``, ``completion``, the activation ``store``), the inputs (``inputs``: corpus, FLEURS,
speech, task views), the steering experiment (``steering_run``), the stages in data-flow order
(``stages``), the launch across torchrun processes (``launch``) and the runner that orders and
resumes them (``runner``). Imports the model, science and base layers.
"""
