"""Test-session wiring shared by tests/ and claims/.

The Hub is switched off before anything imports huggingface_hub, so no test can download.
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def pytest_addoption(parser):
    group = parser.getgroup("step-neurons")
    group.addoption("--profile", default="tiny",
                    help="profile the claims suite runs on: tiny (default), tiny-qwen2-audio, tiny-voxtral "
                         "(offline, judged on their baselines) or paper")
    group.addoption("--update-baselines", action="store_true",
                    help="rewrite fixtures/baselines/<profile>.json from this run and show the diff")
    group.addoption("--network", action="store_true",
                    help="run tests marked 'network' (they may reach the Hugging Face Hub)")


def pytest_configure(config):
    if config.getoption("--network"):
        os.environ.pop("HF_HUB_OFFLINE", None)
        os.environ.pop("TRANSFORMERS_OFFLINE", None)


def pytest_collection_modifyitems(config, items):
    import torch

    no_gpu = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    offline = pytest.mark.skip(reason="needs the network; pass --network to run it")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if "network" in item.keywords and not config.getoption("--network"):
            item.add_marker(offline)
