"""Shared test configuration: deterministic seeds, hypothesis profile."""

import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("qkv", deadline=None, max_examples=40, derandomize=True)
settings.load_profile("qkv")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
