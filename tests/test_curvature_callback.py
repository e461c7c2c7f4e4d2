"""`CurvatureCallback` on a real `transformers.Trainer` run: its numbers reach TensorBoard's event file at the steps
asked for, equal the measures computed on the same weights, and training goes on exactly as without it."""

from __future__ import annotations

import pytest
import torch
from conftest import TEXTS, build_gpt2, train_tokenizer

from hf_landscape import CausalLMObjective, ConfigError, LandscapeProbe
from hf_landscape.callbacks import CurvatureCallback

MAX_STEPS, EVERY = 6, 3
MEASURES = ["critical_sharpness", "trace"]
OPTIONS = {"trace": {"samples": 6}}


def train(folder, callback: CurvatureCallback | None, report_to: list[str]):
    """Train a tiny GPT-2 for `MAX_STEPS` steps (with `callback` attached); return the model and the trainer."""
    from transformers import Trainer, TrainingArguments

    tokenizer = train_tokenizer()
    ids = [i for text in TEXTS for i in tokenizer(text)["input_ids"]]
    data = [
        {"input_ids": torch.tensor(ids[i : i + 12]), "labels": torch.tensor(ids[i : i + 12])}
        for i in range(0, len(ids) - 11, 12)
    ]
    model = build_gpt2(len(tokenizer), seed=0, n_layer=1, n_embd=16)
    args = TrainingArguments(
        output_dir=str(folder),
        max_steps=MAX_STEPS,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=report_to,
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data)
    if callback is not None:
        callback.attach(trainer)
    trainer.train()
    return model, trainer


def held_batch(tokenizer) -> dict:
    return {"input_ids": [tokenizer(text)["input_ids"][:12] for text in TEXTS[:3]]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("curvature_run")
    tokenizer = train_tokenizer()
    callback = CurvatureCallback(held_batch(tokenizer), every_n_steps=EVERY, measures=MEASURES, options=OPTIONS)
    model, trainer = train(folder, callback, ["tensorboard"])
    return model, callback, folder, tokenizer, trainer


def event_scalars(folder) -> dict[str, dict[int, float]]:
    """tag -> step -> value, read from the TensorBoard event files under `folder`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {}
    files = sorted(folder.rglob("events.out.tfevents.*"))
    assert files, "no TensorBoard event file was written"
    for path in files:
        events = EventAccumulator(str(path))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            out.setdefault(tag, {}).update({e.step: e.value for e in events.Scalars(tag)})
    return out


def test_the_measures_reach_tensorboard_at_every_nth_step(run):
    _, callback, folder, _, _ = run
    scalars = event_scalars(folder)
    assert sorted(callback.history) == [3, 6]
    for measure in MEASURES:
        logged = scalars[f"train/curvature/{measure}"]  # the Trainer's TensorBoard logger prefixes "train/"
        assert sorted(logged) == [3, 6]
        for step, value in logged.items():
            assert value == pytest.approx(callback.history[step][f"curvature/{measure}"], rel=1e-6)  # float32 there


def test_the_last_numbers_are_the_measures_of_the_trained_weights(run):
    model, callback, _, tokenizer, _ = run
    probe = LandscapeProbe(model, CausalLMObjective(held_batch(tokenizer)), progress=False)
    last = callback.history[MAX_STEPS]
    assert last["curvature/critical_sharpness"] == probe.critical_sharpness(rtol=1e-2).sharpness
    assert last["curvature/trace"] == probe.hessian_trace(samples=6, method="hutch++").trace


def test_training_goes_on_exactly_as_without_the_callback(run, tmp_path):
    model, _, _, _, _ = run
    plain, _ = train(tmp_path, None, [])
    for (name, p), q in zip(model.named_parameters(), plain.parameters()):
        assert torch.equal(p, q), name


def test_the_numbers_reach_the_trainers_log_history_beside_its_own(run):
    _, callback, _, _, trainer = run
    logged = {e["step"]: e for e in trainer.state.log_history if "curvature/trace" in e}
    assert sorted(logged) == [3, 6]
    for step, entry in logged.items():
        assert {k: v for k, v in entry.items() if k.startswith("curvature/")} == callback.history[step]
    assert sorted(e["step"] for e in trainer.state.log_history if "loss" in e) == list(range(1, MAX_STEPS + 1))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"every_n_steps": 0}, r"`every_n_steps` must be an integer >= 1, got 0"),
        ({"measures": ["hessian_norm"]}, r"`measures` must be a non-empty list of"),
        ({"measures": []}, r"`measures` must be a non-empty list of"),
        ({"options": {"top_eigenvalue": {"tol": 1e-3}}, "measures": ["trace"]}, r"`options` must map measures"),
    ],
)
def test_bad_options_are_refused_at_construction(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CurvatureCallback({"input_ids": [[1, 2, 3, 4]]}, **kwargs)
