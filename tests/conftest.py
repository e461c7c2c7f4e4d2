"""Shared fixtures: an offline byte-level BPE tokenizer, evaluation texts and tiny GPT-2 / Llama models.

Everything is built locally (no network, no pretrained weights), so the suite runs in seconds on a CPU.
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

# The models are tiny: one thread is as fast as two, and far faster when other processes share the 2 cores.
torch.set_num_threads(1)

EOS = "<|endoftext|>"

# Training corpus for the tokenizer: a few paragraphs of plain English.
CORPUS = [
    "The loss landscape of a neural network is the loss seen as a function of its weights. "
    "Around a trained model it is usually a valley, and the shape of that valley says something "
    "about how well the model will generalize to data it has not seen.",
    "Li and colleagues drew random directions in weight space and rescaled every filter of a direction "
    "to the norm of the same filter of the weights. With that filter normalization, plots of networks "
    "with very different weight scales can be compared side by side.",
    "A line is the loss along one direction, a plane the loss over two. Interpolation walks from one "
    "checkpoint to another and shows whether there is a barrier between them.",
    "The river runs past the old mill, where the miller used to grind wheat into flour. In the evening "
    "the children played by the water while the sun went down behind the hills.",
    "Language models predict the next token from the tokens before it. The loss is the average negative "
    "log likelihood of the tokens that count, and padding never counts.",
    "She opened the window, looked at the garden and smiled: the roses were finally in bloom, and the "
    "apple tree was full of small green fruit.",
]

# Evaluation texts: varied lengths; several are longer than 32 tokens, none reaches 64 tokens.
TEXTS = [
    "The model is small.",
    "A loss landscape shows how the loss changes when the weights move.",
    "Hello world!",
    "Random directions are drawn from a Gaussian and normalized filter by filter.",
    "The garden was quiet.",
    "Padding must never change the value of the loss, whatever side it is on.",
    "Interpolation between two checkpoints shows whether a barrier lies between them or not.",
    "Cats sleep.",
    "Every weight is restored after the grid, bit for bit.",
    "In the evening the children played by the river near the mill.",
    "Tokens are predicted one at a time.",
    "Why?",
]


def train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS)
    assert tok.pad_token is None
    return tok


@pytest.fixture(scope="session")
def tokenizer():
    """A byte-level BPE tokenizer (vocab ~300) trained here, with an EOS token and no pad token."""
    return train_tokenizer()


@pytest.fixture(scope="session")
def texts():
    return list(TEXTS)


def build_gpt2(vocab_size: int, seed: int = 0, **overrides):
    from transformers import GPT2Config, GPT2LMHeadModel

    kwargs = dict(n_layer=2, n_embd=32, n_head=2, vocab_size=vocab_size, n_positions=64, bos_token_id=0, eos_token_id=0)
    kwargs.update(overrides)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(**kwargs))


def build_llama(vocab_size: int, seed: int = 0, **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    kwargs = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    kwargs.update(overrides)
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**kwargs))


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


def interrupt_at_call(monkeypatch, owner, method: str, n: int) -> None:
    """Make the `n`-th call of `owner.method` raise KeyboardInterrupt (Ctrl-C in the middle of a grid)."""
    original = getattr(owner, method)
    calls = {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, method, interrupting)
