"""What the tests share: markers for tests that need more than a CPU, where the shared data lives, and tiny models,
a tokenizer and texts built locally (no network, no pretrained weights).

Markers (declared in `pyproject.toml`, deselected by the default test command `-m "not slow and not gpu"`):

* `slow`: needs real pretrained weights or the shared data beside the repository (`../shared/data`);
  `make test-slow` runs them. `require_shared_data("glue", "cola", "dev.tsv")` marks a test `slow` and skips it
  when the file is absent, so a clean clone passes without it.
* `gpu`: needs a CUDA device; `make test-gpu` runs them. `require_gpu` marks a test `gpu` and skips it where no
  CUDA device is visible.

Fixtures stay in `conftest.py`; they call the builders here, which tests may also import directly
(`from testing_utils import build_gpt2`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch

F = TypeVar("F", bound=Callable[..., Any])

REPO_ROOT = Path(__file__).resolve().parents[1]

# --- markers ----------------------------------------------------------------------------------------------------

slow = pytest.mark.slow
gpu = pytest.mark.gpu


def shared_data_dir() -> Path:
    """The shared data folder, `../shared/data` beside the repository root (its README lists the files). It may not
    exist: tests that need it use `require_shared_data`."""
    return REPO_ROOT.parent / "shared" / "data"


def require_shared_data(*parts: str) -> Callable[[F], F]:
    """Mark a test `slow` and skip it unless `shared_data_dir() / parts...` exists."""
    path = shared_data_dir().joinpath(*parts)

    def decorate(test: F) -> F:
        skip = pytest.mark.skipif(not path.exists(), reason=f"needs ../shared/data/{'/'.join(parts)}")
        return slow(skip(test))

    return decorate


def require_gpu(test: F) -> F:
    """Mark a test `gpu` and skip it where no CUDA device is visible."""
    return gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))


def require_package(name: str) -> pytest.MarkDecorator:
    """Skip a test unless the module `name` can be imported (an optional extra or a shared-weights package)."""
    return pytest.mark.skipif(importlib.util.find_spec(name) is None, reason=f"needs the `{name}` package")


# --- texts and a tokenizer ------------------------------------------------------------------------------------------

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
    """A byte-level BPE tokenizer (vocab ~300) trained on `CORPUS`, with an EOS token and no pad token."""
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


# --- tiny models -------------------------------------------------------------------------------------------------


def _tiny(model_class: str, config_class: str, seed: int, defaults: dict, overrides: dict):
    """transformers' `model_class` of a `config_class(**defaults)` with `overrides` applied, its weights drawn after
    `torch.manual_seed(seed)`."""
    import transformers

    config = getattr(transformers, config_class)(**{**defaults, **overrides})
    torch.manual_seed(seed)
    return getattr(transformers, model_class)(config)


def build_gpt2(vocab_size: int, seed: int = 0, **overrides):
    """A tiny GPT-2 LM (2 layers, width 32, tied embeddings; its projections are transposed `Conv1D`s)."""
    defaults = dict(
        n_layer=2, n_embd=32, n_head=2, vocab_size=vocab_size, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    return _tiny("GPT2LMHeadModel", "GPT2Config", seed, defaults, overrides)


def build_llama(vocab_size: int, seed: int = 0, **overrides):
    """A tiny Llama LM (2 layers, width 32, grouped-query attention: q_proj and o_proj are both 32 × 32)."""
    defaults = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=64, bos_token_id=0,
                    eos_token_id=0)  # fmt: skip
    return _tiny("LlamaForCausalLM", "LlamaConfig", seed, defaults, overrides)


def build_neox(vocab_size: int, seed: int = 0, **overrides):
    """A tiny GPT-NeoX LM (1 layer, width 4, 2 heads; its fused `query_key_value` holds [q_h | k_h | v_h] per head)."""
    defaults = dict(hidden_size=4, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
                    vocab_size=vocab_size, max_position_embeddings=16, rotary_pct=1.0, bos_token_id=0,
                    eos_token_id=0)  # fmt: skip
    return _tiny("GPTNeoXForCausalLM", "GPTNeoXConfig", seed, defaults, overrides)


def build_bert_classifier(vocab_size: int, seed: int = 0, **overrides):
    """A tiny BERT sequence classifier (2 layers, width 32, two labels unless `num_labels` is given)."""
    defaults = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    vocab_size=vocab_size, max_position_embeddings=64, num_labels=2)  # fmt: skip
    return _tiny("BertForSequenceClassification", "BertConfig", seed, defaults, overrides)


# --- interrupting and snapshotting -----------------------------------------------------------------------------------


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


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every tensor of `model.state_dict()`."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bitwise_equal(model: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """`model`'s state dict holds exactly the names of `saved`, in the same order, with the same bits."""
    current = model.state_dict()
    assert list(current) == list(saved)
    for name, tensor in saved.items():
        assert torch.equal(current[name], tensor), name


# --- exact curvature of a tiny model ---------------------------------------------------------------------------------

TINY_VOCAB = 24
TINY_SEQUENCES = [[3, 17, 5, 9, 22, 1, 0, 14, 8, 11], [7, 2, 19, 4, 4, 13, 6], [21, 10, 15, 12, 23]]


class ExactCurvature:
    """A float64 GPT-2 with 396 parameters (all of them, the tied embedding once), its causal-LM objective, and its loss,
    logits, Hessian and generalized Gauss-Newton matrix computed by autograd over the flat parameter vector, written
    independently of hf_landscape (per-sequence cross-entropy sums over every predicted token)."""

    def __init__(self, seed: int = 0) -> None:
        from hf_landscape import CausalLMObjective

        self.model = build_gpt2(TINY_VOCAB, seed=seed, n_layer=1, n_embd=4, n_head=1, n_positions=12).double().eval()
        self.objective = CausalLMObjective({"input_ids": TINY_SEQUENCES}, batch_size=2)
        self.objective.bind(self.model)
        named = list(self.model.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        sizes = [s.numel() for s in self.shapes]
        self.offsets = dict(zip(self.names, [sum(sizes[:i]) for i in range(len(sizes))]))
        self.tokens = sum(len(s) - 1 for s in TINY_SEQUENCES)
        self.theta = torch.cat([p.detach().reshape(-1) for _, p in named])

    def params(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        sizes = [s.numel() for s in self.shapes]
        return {n: c.view(s) for n, c, s in zip(self.names, flat.split(sizes), self.shapes)}

    def logits(self, flat: torch.Tensor) -> torch.Tensor:
        """The logits of every predicted token, (tokens, vocab), in data order."""
        from torch.func import functional_call

        rows = []
        for seq in TINY_SEQUENCES:
            ids = torch.tensor([seq])
            rows.append(functional_call(self.model, self.params(flat), (ids,)).logits[0, :-1])
        return torch.cat(rows)

    def targets(self) -> torch.Tensor:
        return torch.cat([torch.tensor(seq[1:]) for seq in TINY_SEQUENCES])

    def loss(self, flat: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(self.logits(flat), self.targets(), reduction="sum") / self.tokens

    def loss_of(self, model: torch.nn.Module) -> torch.Tensor:
        """The same loss at `model`'s current weights (a forward per sequence, differentiable)."""
        import torch.nn.functional as F

        logits = torch.cat([model(torch.tensor([seq])).logits[0, :-1] for seq in TINY_SEQUENCES])
        return F.cross_entropy(logits, self.targets(), reduction="sum") / self.tokens

    def _eager(self, fn: Callable[[], Any]) -> Any:
        self.model.set_attn_implementation("eager")  # the reference differentiates twice too
        try:
            return fn()
        finally:
            self.model.set_attn_implementation("sdpa")

    def hessian(self) -> torch.Tensor:
        return self._eager(lambda: torch.autograd.functional.hessian(self.loss, self.theta, vectorize=True))

    def jacobian(self) -> torch.Tensor:
        """d logits / d θ, (tokens · vocab, parameters)."""
        jac = torch.autograd.functional.jacobian(lambda f: self.logits(f).reshape(-1), self.theta, vectorize=True)
        return jac

    def ggn(self, empirical_fisher: bool = False) -> torch.Tensor:
        """Jᵀ H_out J (softmax cross-entropy's Hessian per row, diag(p) − ppᵀ), or Jᵀ (Σ eeᵀ) J with e = p − onehot(y)."""
        jac = self.jacobian().view(self.tokens, TINY_VOCAB, -1)
        with torch.no_grad():
            p = torch.softmax(self.logits(self.theta), dim=-1)
            if empirical_fisher:
                e = p - torch.nn.functional.one_hot(self.targets(), TINY_VOCAB).double()
                h_out = e[:, :, None] * e[:, None, :]
            else:
                h_out = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        return torch.einsum("rvp,rvw,rwq->pq", jac, h_out, jac) / self.tokens


def record_bars(monkeypatch, module_name: str) -> list:
    """Replace `tqdm` in the module `module_name` with a subclass that records every bar it makes: a list of
    (bar, keyword arguments) that fills as the module runs."""
    import importlib

    import tqdm as tqdm_module

    bars: list = []

    class Recorded(tqdm_module.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append((self, kwargs))

    monkeypatch.setattr(importlib.import_module(module_name), "tqdm", Recorded)  # the module, not a function
    return bars
