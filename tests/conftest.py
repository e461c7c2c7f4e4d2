"""Shared fixtures: an offline byte-level BPE tokenizer, evaluation texts and tiny GPT-2 / Llama models.

Everything is built locally (no network, no pretrained weights), so the suite runs in seconds on a CPU. The builders
and markers live in `testing_utils.py`; the fixtures here call them.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["MPLBACKEND"] = "Agg"

import pytest  # noqa: E402
import torch  # noqa: E402

# Re-exported: test files import these from `conftest` as well as from `testing_utils`.
from testing_utils import (  # noqa: E402, F401
    CORPUS,
    EOS,
    TEXTS,
    build_gpt2,
    build_llama,
    interrupt_at_call,
    train_tokenizer,
)

# The models are tiny: one thread is as fast as two, and far faster when other processes share the 2 cores.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    """A byte-level BPE tokenizer (vocab ~300) trained here, with an EOS token and no pad token."""
    return train_tokenizer()


@pytest.fixture(scope="session")
def texts():
    return list(TEXTS)


@pytest.fixture
def gpt2_model(tokenizer):
    """Factory: `gpt2_model(seed=0, **config_overrides)` builds a fresh tiny GPT-2 (tied embeddings)."""

    def make(seed: int = 0, **overrides):
        return build_gpt2(len(tokenizer), seed, **overrides)

    return make


@pytest.fixture
def llama_model(tokenizer):
    """Factory: `llama_model(seed=0, **config_overrides)` builds a fresh tiny Llama."""

    def make(seed: int = 0, **overrides):
        return build_llama(len(tokenizer), seed, **overrides)

    return make
