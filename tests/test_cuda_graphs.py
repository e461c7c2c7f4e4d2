"""CUDA graphs for the one-point grid loop (`hf_landscape.engine.graphs`).

On the CPU the tests check the wiring: when a recording is asked for and made, that a failed recording falls
back to eager evaluation, and that nothing is recorded off a GPU. The `gpu` tests record for real and compare
with eager evaluation bit for bit (`pytest -m gpu tests/test_cuda_graphs.py` on a machine with CUDA).
"""

from __future__ import annotations

import functools
import logging
import types

import numpy as np
import pytest
import torch
from conftest import build_gpt2, build_llama, interrupt_at_call
from testing_utils import gpu

import hf_landscape.engine as engine
import hf_landscape.engine.graphs as graphs
from hf_landscape import CausalLMObjective, ConfigError, LandscapeProbe
from hf_landscape.objectives.base import Objective

# Rows of different lengths: padded batches, whose loss gathers the counted positions by index.
IDS = [[(7 * i + 3 * j) % 97 + 1 for j in range(12 + i % 5)] for i in range(6)]
FULL = [[(5 * i + 11 * j) % 97 + 1 for j in range(16)] for i in range(4)]  # no padding: the whole-batch loss


def make_probe(ids=IDS, device="cpu", dtype=torch.float32, build=build_gpt2, **kwargs):
    model = build(100, seed=0).to(device, dtype)
    kwargs.setdefault("points_per_forward", 1)  # graphs record the one-point evaluation
    return LandscapeProbe(model, CausalLMObjective({"input_ids": ids}, batch_size=4), progress=False, **kwargs)


class FakeGraph:
    """Stands in for a recording on the CPU: evaluates eagerly, counts replays and closes."""

    def __init__(self, model, objective):
        self.model, self.objective = model, objective
        self.replays = 0
        self.closed = False

    def __call__(self):
        self.replays += 1
        return self.objective.loss_tensor(self.model)

    def close(self):
        self.closed = True


@pytest.fixture
def recorded(monkeypatch):
    """Deferred reads (the GPU loop) on the CPU, with `capture_loss` returning a `FakeGraph`."""
    made = []

    def capture(model, objective):
        made.append(FakeGraph(model, objective))
        return made[-1]

    monkeypatch.setattr(engine.POLICY, "defers_reads", lambda model, objective: hasattr(objective, "loss_tensor"))
    monkeypatch.setattr(engine.loop, "capture_loss", capture)
    return made


def test_graphs_record_once_and_replay_at_every_point(recorded):
    reference = make_probe(cuda_graphs=False).plane(steps=(4, 3), seed=1)
    plane = make_probe().plane(steps=(4, 3), seed=1)
    np.testing.assert_array_equal(plane.values, reference.values)
    assert len(recorded) == 1 and recorded[0].replays == 12 and recorded[0].closed


def test_graphs_off_records_nothing(recorded):
    make_probe(cuda_graphs=False).plane(steps=(3, 3), seed=1)
    assert recorded == []


def test_compile_records_no_graph_of_its_own(recorded):
    probe = make_probe(compile=True)
    assert not probe.runner.config.graphs  # the compiled forward (mode="reduce-overhead") records its own


class NotStacked(Objective):
    """A user's objective: the causal-LM loss, also as a device tensor, but one point per forward only."""

    def __init__(self) -> None:
        self.inner = CausalLMObjective({"input_ids": IDS}, batch_size=4)

    def bind(self, model):
        self.inner.bind(model)

    def evaluate(self, model, *, details=False):
        return self.inner.evaluate(model, details=details)

    def fingerprint(self):
        return "not-stacked"

    def describe(self):
        return {"type": "NotStacked", "fingerprint": self.fingerprint()}

    @property
    def num_tokens(self):
        return self.inner.num_tokens

    def loss_tensor(self, model):
        return self.inner.loss_tensor(model)


def test_an_objective_with_a_loss_tensor_but_no_stacking_is_recorded_too(recorded):
    from hf_landscape.objectives.base import LossTensor, StackedEvaluation, supports

    objective = NotStacked()
    assert supports(objective, LossTensor) and not supports(objective, StackedEvaluation)
    reference = make_probe(cuda_graphs=False).plane(steps=(3, 3), seed=1)
    probe = LandscapeProbe(build_gpt2(100, seed=0), objective, progress=False, points_per_forward=1)
    plane = probe.plane(steps=(3, 3), seed=1)
    assert len(recorded) == 1 and recorded[0].replays == 9
    np.testing.assert_array_equal(plane.values, reference.values)


def test_a_low_rank_grid_records_no_graph(recorded):
    """The low-rank hooks read each point's coefficients as the forward runs: a recording would replay the first."""
    reference = make_probe(cuda_graphs=False).plane(steps=(3, 3), seed=1, directions="lora", rank=2)
    plane = make_probe().plane(steps=(3, 3), seed=1, directions="lora", rank=2)
    assert recorded == []
    np.testing.assert_array_equal(plane.values, reference.values)


def test_a_low_rank_grid_shows_its_bar_under_the_grids_name(monkeypatch):
    from testing_utils import record_bars

    bars = record_bars(monkeypatch, "hf_landscape.engine.loop")
    probe = make_probe()
    probe.progress = True
    probe.line(steps=3, seed=1, direction="lora", rank=2)
    assert [bar.desc for bar, _ in bars] == ["line"]


def test_run_grid_records_no_graph_unless_asked(recorded):
    probe = make_probe()
    values, _, _ = engine.run_grid(probe.model.eval(), probe.objective, [(0.0,)] * 2, lambda point: None)
    assert recorded == [] and values[0] == values[1] == probe.loss()


def test_interpolation_records_a_graph(recorded):
    other = build_gpt2(100, seed=1)
    make_probe().interpolate(other, steps=5)
    assert len(recorded) == 1 and recorded[0].replays == 5


def test_graph_closed_when_the_grid_is_interrupted(recorded, monkeypatch):
    probe = make_probe()
    interrupt_at_call(monkeypatch, probe.objective, "loss_tensor", 4)
    weights = {n: p.detach().clone() for n, p in probe.model.named_parameters()}
    with pytest.raises(KeyboardInterrupt):
        probe.plane(steps=(3, 3), seed=1)
    assert recorded[0].closed
    for n, p in probe.model.named_parameters():
        assert torch.equal(p, weights[n]), n


def test_failed_recording_falls_back_to_eager(monkeypatch, caplog):
    monkeypatch.setattr(engine.POLICY, "defers_reads", lambda model, objective: hasattr(objective, "loss_tensor"))
    monkeypatch.setattr(graphs, "_single_cuda_device", lambda model: torch.device("cpu"))  # pretend: one GPU

    def refuse(self, model, objective):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs.GraphedLoss, "__init__", refuse)
    reference = make_probe(cuda_graphs=False).plane(steps=(3, 3), seed=1)
    with caplog.at_level(logging.WARNING, logger="hf_landscape.engine.graphs"):
        plane = make_probe().plane(steps=(3, 3), seed=1)
    np.testing.assert_array_equal(plane.values, reference.values)
    assert "evaluating without CUDA graphs" in caplog.text and "not permitted when stream is capturing" in caplog.text


def test_nothing_is_recorded_on_the_cpu():
    probe = make_probe()
    with torch.inference_mode():
        assert graphs.capture_loss(probe.model, probe.objective) is None


def test_nothing_is_recorded_in_training_mode(monkeypatch):
    monkeypatch.setattr(graphs, "_single_cuda_device", lambda model: torch.device("cpu"))  # pretend: one GPU
    monkeypatch.setattr(graphs.GraphedLoss, "__init__", lambda self, model, objective: None)
    probe = make_probe()
    probe.model.train()
    assert graphs.capture_loss(probe.model, probe.objective) is None
    probe.model.eval()
    assert isinstance(graphs.capture_loss(probe.model, probe.objective), graphs.GraphedLoss)


def test_long_evaluations_are_not_recorded(monkeypatch):
    monkeypatch.setattr(graphs, "_single_cuda_device", lambda model: torch.device("cpu"))  # pretend: one GPU
    monkeypatch.setattr(graphs.GraphedLoss, "__init__", lambda self, model, objective: None)
    probe = make_probe()
    probe.model.eval()
    flop = graphs.evaluation_flop(probe.model, probe.objective)
    monkeypatch.setattr(engine.POLICY, "graphs_max_flop", flop)
    assert graphs.capture_loss(probe.model, probe.objective) is None
    monkeypatch.setattr(engine.POLICY, "graphs_max_flop", flop + 1)
    assert isinstance(graphs.capture_loss(probe.model, probe.objective), graphs.GraphedLoss)


def test_an_evaluation_counts_two_flop_per_parameter_and_token():
    probe = make_probe()
    parameters = sum(p.numel() for p in probe.model.parameters())
    assert graphs.evaluation_flop(probe.model, probe.objective) == 2.0 * parameters * probe.objective.num_tokens


def test_an_objective_without_a_loss_tensor_counts_no_flop():
    class Counted:  # counts its tokens, but has no `loss_tensor`
        num_tokens = 7

    assert graphs.evaluation_flop(torch.nn.Linear(3, 2), Counted()) == 0.0


def test_recording_out_of_memory_falls_back_to_eager(monkeypatch, caplog):
    monkeypatch.setattr(graphs, "_single_cuda_device", lambda model: torch.device("cpu"))  # pretend: one GPU
    freed = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(True))

    def out_of_memory(self, model, objective):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(graphs.GraphedLoss, "__init__", out_of_memory)
    probe = make_probe()
    probe.model.eval()
    with caplog.at_level(logging.WARNING, logger="hf_landscape.engine.graphs"):
        assert graphs.capture_loss(probe.model, probe.objective) is None
    assert freed == [True] and "OutOfMemoryError" in caplog.text


def test_nothing_is_recorded_for_an_objective_without_loss_tensor():
    probe = make_probe()

    class NoTensor:
        pass

    assert graphs.capture_loss(probe.model, NoTensor()) is None


def test_recording_needs_every_tensor_on_one_device():
    model = build_gpt2(100)
    assert graphs._single_device(model) == torch.device("cpu")
    assert graphs._single_cuda_device(model) is None  # one device, but not a GPU
    model.transformer.wpe.weight = torch.nn.Parameter(torch.zeros(64, 32, device="meta"))
    assert graphs._single_device(model) is None  # two devices


def test_cuda_graphs_must_be_a_bool():
    with pytest.raises(ConfigError, match="`cuda_graphs` must be True or False, got 'yes'"):
        make_probe(cuda_graphs="yes")


def test_padded_loss_gathers_counted_positions_by_index():
    probe = make_probe()
    batch = probe.objective._batches[0]
    assert not batch.full
    mask = batch.mask
    width = mask.shape[1] + 1
    expected = [r * width + c for r in range(mask.shape[0]) for c in range(mask.shape[1]) if mask[r, c]]
    assert batch.counted.tolist() == expected


# --- on a GPU: real recordings ----------------------------------------------------------------------------------


def _needs_cuda():
    if not torch.cuda.is_available():
        pytest.fail("this test needs a CUDA device; deselect it with -m 'not gpu'")


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("ids", [IDS, FULL], ids=["padded", "full"])
def test_graphed_plane_equals_eager_bitwise(dtype, ids):
    _needs_cuda()
    eager = make_probe(ids, "cuda", dtype, cuda_graphs=False).plane(steps=(5, 4), seed=3)
    graphed = make_probe(ids, "cuda", dtype).plane(steps=(5, 4), seed=3)
    np.testing.assert_array_equal(graphed.values, eager.values)
    assert len(set(graphed.values.ravel().tolist())) > 10  # the replays saw every point's own weights


@gpu
def test_graphed_llama_plane_equals_eager_bitwise():
    _needs_cuda()
    eager = make_probe(IDS, "cuda", torch.bfloat16, build_llama, cuda_graphs=False).plane(steps=(4, 4), seed=0)
    graphed = make_probe(IDS, "cuda", torch.bfloat16, build_llama).plane(steps=(4, 4), seed=0)
    np.testing.assert_array_equal(graphed.values, eager.values)


@gpu
def test_graphed_plane_under_autocast_equals_eager_bitwise():
    _needs_cuda()
    eager = make_probe(IDS, "cuda", autocast="bfloat16", cuda_graphs=False).plane(steps=(4, 4), seed=0)
    graphed = make_probe(IDS, "cuda", autocast="bfloat16").plane(steps=(4, 4), seed=0)
    np.testing.assert_array_equal(graphed.values, eager.values)


@gpu
def test_graph_is_recorded_on_a_gpu_and_its_memory_freed():
    _needs_cuda()
    probe = make_probe(IDS, "cuda")
    probe.model.eval()  # as the grid loop evaluates it
    with torch.inference_mode():
        graphs.capture_loss(probe.model, probe.objective).close()  # the side stream's cuBLAS workspace, once
        before = torch.cuda.memory_allocated()
        graphed = graphs.capture_loss(probe.model, probe.objective)
        assert isinstance(graphed, graphs.GraphedLoss)
        value = graphed().item()
        graphed.close()
    assert value == probe.loss()
    del graphed
    assert torch.cuda.memory_allocated() == before


@gpu
def test_model_that_syncs_is_evaluated_eagerly(caplog):
    _needs_cuda()
    probe = make_probe(IDS, "cuda")
    original = probe.model.forward

    @functools.wraps(original)  # keeps the signature (the objective reads it for `position_ids`)
    def forward(*args, **kwargs):  # reads a value back to the host, as data-dependent code does
        out = original(*args, **kwargs)
        if out.logits.isnan().any().item():
            raise AssertionError
        return out

    reference = make_probe(IDS, "cuda", cuda_graphs=False).plane(steps=(3, 3), seed=0)
    probe.model.forward = forward
    with caplog.at_level(logging.WARNING, logger="hf_landscape.engine.graphs"):
        plane = probe.plane(steps=(3, 3), seed=0)
    np.testing.assert_array_equal(plane.values, reference.values)
    assert "evaluating without CUDA graphs" in caplog.text
    # a failed recording leaves nothing behind: the next probe records and replays as usual
    again = make_probe(IDS, "cuda")
    again.model.eval()
    with torch.inference_mode():
        graphed = graphs.capture_loss(again.model, again.objective)
    assert isinstance(graphed, graphs.GraphedLoss)
    assert graphed().item() == again.loss()


class OnGPU:
    """A stand-in parameter that reports a CUDA device (the rule is decided before anything runs on it)."""

    device = torch.device("cuda")

    def numel(self):
        return 1000

    def element_size(self):
        return 2


class Measuring(Exception):
    pass


@pytest.mark.parametrize(
    "graphs_on, above, expected", [(True, True, 1), (True, False, "measures"), (False, True, "measures")]
)
def test_auto_replays_one_point_at_or_above_the_flop_threshold(monkeypatch, graphs_on, above, expected):
    probe = make_probe()
    flop = graphs.evaluation_flop(probe.model, probe.objective)
    assert flop == 2.0 * sum(p.numel() for p in probe.model.parameters()) * probe.objective.num_tokens
    monkeypatch.setattr(engine.POLICY, "auto_stack_max_flop", flop if above else flop + 1)

    def measure(*args):
        raise Measuring  # "auto" went on to time an evaluation for stacking

    monkeypatch.setattr(torch.cuda, "synchronize", measure)
    call = lambda: engine.points_per_forward(  # noqa: E731
        probe.model, {"w": OnGPU()}, probe.objective, "auto", 100, graphs=graphs_on
    )
    if expected == "measures":
        with pytest.raises(Measuring):
            call()
    else:
        assert call() == expected


def test_auto_replays_one_point_only_when_asked_for_graphs(monkeypatch):
    probe = make_probe()
    monkeypatch.setattr(engine.POLICY, "auto_stack_max_flop", 0.0)  # every evaluation is "large"

    def measure(*args):
        raise Measuring

    monkeypatch.setattr(torch.cuda, "synchronize", measure)
    with pytest.raises(Measuring):  # graphs default to off: the FLOP rule does not apply
        engine.points_per_forward(probe.model, {"w": OnGPU()}, probe.objective, "auto", 100)


@pytest.mark.parametrize(("limit", "expected"), [(1999, 1), (2000, "measures")])
def test_auto_takes_one_point_for_weights_over_the_row_cache(monkeypatch, limit, expected):
    probe = make_probe()
    monkeypatch.setattr(engine.POLICY, "row_cache_max_bytes", limit)  # OnGPU: 1000 elements of 2 bytes

    def measure(*args):
        raise Measuring

    monkeypatch.setattr(torch.cuda, "synchronize", measure)
    call = lambda: engine.points_per_forward(probe.model, {"w": OnGPU()}, probe.objective, "auto", 100)  # noqa: E731
    if expected == "measures":
        with pytest.raises(Measuring):
            call()
    else:
        assert call() == expected


def test_auto_stacks_what_a_share_of_free_memory_holds_at_twice_the_cost_of_one_point(monkeypatch):
    """The measurement, with the GPU's figures given: weights 2000 bytes (`OnGPU`), one evaluation's activations
    3000, 10⁶ bytes free; 0.4·10⁶ // (2·5000) = 40 points, each figure asked of the parameters' device."""
    import hf_landscape.engine.policy as policy

    probe = make_probe()
    asked: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "synchronize", asked.append)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", asked.append)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: asked.append(device) or 5000)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: asked.append(device) or 8000)
    monkeypatch.setattr(policy, "available_memory", lambda device: asked.append(device) or 10**6)
    monkeypatch.setattr(policy, "evaluate", lambda model, objective: None)  # one evaluation takes no time
    for n, expected in ((100, 40), (30, 30)):
        asked.clear()
        assert engine.points_per_forward(probe.model, {"w": OnGPU()}, probe.objective, "auto", n) == expected
        assert asked == [OnGPU.device] * 7  # sync, reset, allocated, sync after each of two runs, peak, free


@gpu
@pytest.mark.parametrize("normalization", ["filter", "layer", "none", "model"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("orthogonalize", [False, True])
@pytest.mark.parametrize("threshold", [0, 2**62])  # drawn on the GPU, or on the host and moved
def test_directions_drawn_for_a_gpu_model_equal_the_cpu_ones(
    dtype, normalization, orthogonalize, threshold, monkeypatch
):
    import hf_landscape.directions.draw as draw
    import hf_landscape.directions.random as rnd
    from hf_landscape import RandomDirectionConfig, random_directions

    _needs_cuda()
    monkeypatch.setattr(draw, "CHUNK", 1000)  # the embedding (100 x 32) and the MLP weights drawn in chunks
    monkeypatch.setattr(rnd, "DEVICE_DRAW_MIN_ELEMENTS", threshold)
    if threshold:  # orthogonalize / "model" on the host too
        monkeypatch.setattr(rnd, "_joint_device", lambda params, axes: torch.device("cpu"))
    model = build_gpt2(100, seed=0).to(dtype)
    config = RandomDirectionConfig(normalization=normalization, include_1d=True, orthogonalize=orthogonalize)
    on_cpu = random_directions(model, 3, config=config)
    model.to("cuda")
    if not threshold:  # the GPU does the work, not the host
        assert rnd._joint_device(dict(model.named_parameters()), 2).type == "cuda"
    on_gpu = random_directions(model, 3, config=config)
    for cpu_dir, gpu_dir in zip(on_cpu, on_gpu):
        for name, t in cpu_dir.tensors.items():
            assert gpu_dir.tensors[name].device.type == "cuda"
            assert torch.equal(gpu_dir.tensors[name].cpu(), t), name


@gpu
def test_raw_draw_on_the_gpu_equals_the_cpu_one():
    from hf_landscape.directions.draw import gaussian

    _needs_cuda()
    on_cpu = gaussian((1 << 23,), 11, 1, "w")  # two chunks, ~256 entries from the outermost bin's fine table
    on_gpu = gaussian((1 << 23,), 11, 1, "w", device="cuda")
    assert (on_cpu.abs() > 4.16957).sum() > 100
    assert torch.equal(on_gpu.cpu(), on_cpu)


class OnCudaModel(torch.nn.Module):
    """A model whose first parameter says it lives on a GPU (only `defers_reads` looks)."""

    def parameters(self, recurse=True):
        yield types.SimpleNamespace(device=torch.device("cuda", 0))


@pytest.mark.parametrize(
    ("model", "tensor_loss", "expected"),
    [(OnCudaModel(), True, True), (OnCudaModel(), False, False), (torch.nn.Linear(2, 2), True, False)],
    ids=["gpu", "gpu, no loss tensor", "cpu"],
)
def test_loss_reads_are_deferred_on_a_gpu_for_an_objective_with_a_loss_tensor(model, tensor_loss, expected):
    objective = make_probe().objective
    if not tensor_loss:

        class Counted:  # evaluates, but has no `loss_tensor`
            num_tokens = 7

        objective = Counted()
    assert engine.POLICY.defers_reads(model, objective) is expected


def test_a_model_without_parameters_defers_no_reads():
    assert engine.POLICY.defers_reads(torch.nn.ReLU(), make_probe().objective) is False
