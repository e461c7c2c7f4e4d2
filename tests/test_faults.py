"""The fault suite: every promise of `docs/guarantees.md`, each fault injected deterministically.

Faults: a failing `os.replace`, a full disk (ENOSPC from the write), SIGKILL at the final save, a lock held by
another process, a Hub endpoint on 127.0.0.1 that echoes the `Authorization` header, and links planted at every
temporary and final name. What is asserted: no computed point is lost, no file outside the chosen folder is
touched, the model comes back exactly as it was (tensors, `requires_grad`, `.grad`, every module's `training`
flag, hooks, patched forwards), and no token reaches any text that leaves the library.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TEXTS, build_gpt2, build_llama, train_tokenizer
from hub_server import running_hub
from safetensors.torch import save_file

from hf_landscape import (
    CausalLMObjective,
    CompareReport,
    Direction,
    GenerationObjective,
    HubError,
    LandscapeError,
    LandscapeProbe,
    ModelError,
    MultipleChoiceObjective,
    Surface,
    SurfaceError,
)
from hf_landscape.cli.main import main
from hf_landscape.engine.checkpoint import ARRAYS_NAME, META_NAME, GridCheckpoint

IDS = [[(7 * i + 3 * j) % 97 + 1 for j in range(10 + i % 3)] for i in range(4)]
LOCK_NAME = ".hf_landscape.lock"


def make_probe(seed: int = 0, **kwargs) -> LandscapeProbe:
    return LandscapeProbe(
        build_gpt2(100, seed=seed), CausalLMObjective({"input_ids": IDS}, batch_size=4), progress=False, **kwargs
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    tokenizer = train_tokenizer()
    build_gpt2(len(tokenizer), n_layer=1, n_embd=16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(" ".join(TEXTS * 2))
    return path


def line_argv(model_dir, text_file, out, *extra):
    argv = ["line", model_dir, "--text-file", text_file, "--max-length", 16, "--max-examples", 3, "--steps", 5]
    return [str(a) for a in [*argv, "--out", out, "--no-progress", *extra]]


def cli(argv, capsys):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr()


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("hf-landscape ")]


def count_evaluations(monkeypatch) -> list[int]:
    """Count every evaluation of a causal-LM objective (one point per call, or several stacked)."""
    calls: list[int] = []
    for name in ("evaluate", "evaluate_points", "loss_tensor", "loss_points"):
        original = getattr(CausalLMObjective, name)

        def counting(self, *args, _original=original, **kwargs):
            calls.append(1)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(CausalLMObjective, name, counting)
    return calls


def fail_replace_into(monkeypatch, name: str, error: int = errno.ENOSPC) -> None:
    """`os.replace` onto a file called `name` fails with `error` (the rename of the final save)."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(os.fspath(dst)) == name:
            raise OSError(error, os.strerror(error), os.fspath(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def partial_done(folder: Path) -> int:
    return json.loads((folder / META_NAME).read_text())["done"]


# --- 1. nothing computed is ever lost ------------------------------------------------------------------------


def test_failed_final_save_keeps_every_point_and_a_rerun_evaluates_none(
    model_dir, text_file, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out"
    argv = line_argv(model_dir, text_file, out, "--no-plots")
    fail_replace_into(monkeypatch, "surface.json")
    code, io = cli(argv, capsys)
    assert code == 1
    (line,) = error_lines(io.err)  # one clear line: the folder, what is kept, and the fix
    assert str(out) in line and "5 evaluated points are kept" in line and "run the same command again" in line
    assert not (out / "surface.json").exists() and partial_done(out) == 5
    monkeypatch.undo()
    calls = count_evaluations(monkeypatch)
    code, _ = cli(argv, capsys)
    assert code == 0 and calls == []
    assert Surface.from_pretrained(out).values.shape == (5,)
    assert sorted(p.name for p in out.iterdir()) == ["surface.json", "surface.safetensors"]


def test_disk_full_at_the_final_save_keeps_every_point(tmp_path, monkeypatch):
    import hf_landscape.io as io

    probe = make_probe()
    plane = probe.plane(steps=(3, 2), checkpoint_dir=tmp_path, checkpoint_every=100)
    real_write = io._write_all

    def write_all(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "_write_all", write_all)
    with pytest.raises(SurfaceError, match=r"No space left on device.*6 evaluated points are kept"):
        plane.save_pretrained(tmp_path)
    assert partial_done(tmp_path) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == [META_NAME, ARRAYS_NAME]  # no temporary left behind
    monkeypatch.setattr(io, "_write_all", real_write)
    calls = count_evaluations(monkeypatch)
    again = make_probe().plane(steps=(3, 2), checkpoint_dir=tmp_path)
    assert calls == [] and np.array_equal(again.values, plane.values)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "OSError: No space left on device"),
        (OSError("no errno"), "no errno"),
        (ValueError("not serializable"), "ValueError: not serializable"),
    ],
    ids=["errno", "bare OSError", "ValueError"],
)
def test_a_failed_save_names_the_folder_and_the_error(tmp_path, monkeypatch, error, reason):
    import hf_landscape.io as io

    def write_json(path, record):
        raise error

    monkeypatch.setattr(io, "write_json", write_json)
    with pytest.raises(SurfaceError) as caught:
        _write_surface(tmp_path)
    assert str(caught.value) == (
        f"Could not save the surface to {str(tmp_path)!r} ({reason}); the folder holds what it held before. "
        "Fix that (free disk space, make the folder writable), then save again."
    )


def test_a_failed_save_of_draws_over_seeds_counts_every_draws_points_in_their_common_folder(tmp_path, monkeypatch):
    import hf_landscape.io as io

    line = make_probe().line(steps=3, seed=[0, 1], checkpoint_dir=tmp_path)

    def write_json(path, record):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "write_json", write_json)
    with pytest.raises(SurfaceError) as caught:
        line.save_pretrained(tmp_path)
    assert str(caught.value) == (
        f"Could not save the surface to {str(tmp_path)!r} (OSError: No space left on device); all 6 evaluated points "
        f"are kept in {str(tmp_path)!r}: fix that (free disk space, make the folder writable), then run the same "
        "command again (or call the same method with the same `checkpoint_dir`), which finishes from them without "
        "evaluating any point again."
    )


def test_a_failed_save_names_the_one_partial_folder_as_given(tmp_path, monkeypatch):
    import hf_landscape.io as io

    monkeypatch.chdir(tmp_path)
    line = make_probe().line(steps=3, checkpoint_dir=".")

    def write_json(path, record):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "write_json", write_json)
    with pytest.raises(SurfaceError, match=r"all 3 evaluated points are kept in '\.': fix that"):
        line.save_pretrained(".")


def test_a_library_grid_is_kept_until_saved_and_a_rerun_evaluates_none(tmp_path, monkeypatch):
    first = make_probe().plane(steps=(3, 2), checkpoint_dir=tmp_path, checkpoint_every=100)
    assert partial_done(tmp_path) == 6  # fewer points than `checkpoint_every`, kept all the same
    calls = count_evaluations(monkeypatch)
    again = make_probe().plane(steps=(3, 2), checkpoint_dir=tmp_path)
    assert calls == [] and np.array_equal(again.values, first.values)
    again.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["surface.json", "surface.safetensors"]


def test_saving_into_another_folder_keeps_the_partial(tmp_path):
    plane = make_probe().plane(steps=(2, 2), checkpoint_dir=tmp_path / "grid")
    plane.save_pretrained(tmp_path / "elsewhere")
    assert partial_done(tmp_path / "grid") == 4


def test_over_seeds_partials_are_cleared_by_saving_the_combined_surface(tmp_path, monkeypatch):
    line = make_probe().line(steps=3, seed=[0, 1], checkpoint_dir=tmp_path)
    assert partial_done(tmp_path / "seed-0") == 3 and partial_done(tmp_path / "seed-1") == 3
    calls = count_evaluations(monkeypatch)
    assert np.array_equal(make_probe().line(steps=3, seed=[0, 1], checkpoint_dir=tmp_path).values, line.values)
    assert calls == []
    line.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["surface.json", "surface.safetensors"]


KILLED_AT_FINAL_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import torch
    torch.set_num_threads(1)
    real = os.replace
    def replace(src, dst, *args, **kwargs):
        if os.path.basename(os.fspath(dst)) == "surface.json":
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *args, **kwargs)
    os.replace = replace
    from hf_landscape.cli.main import main
    main({argv!r})
    """
)


def test_sigkill_at_the_final_save_then_a_rerun_evaluates_none(model_dir, text_file, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    argv = line_argv(model_dir, text_file, out, "--no-plots")
    script = KILLED_AT_FINAL_SAVE.format(tests=str(Path(__file__).parent), argv=argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert partial_done(out) == 5
    calls = count_evaluations(monkeypatch)
    code, _ = cli(argv, capsys)
    assert code == 0 and calls == []
    assert Surface.from_pretrained(out).values.shape == (5,)


def record_file_events(monkeypatch) -> list[tuple[str, str]]:
    """(event, file name) for every fsync, rename and removal, in order (the file an fsync'ed descriptor names)."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace, real_unlink = os.fsync, os.replace, os.unlink

    def fsync(fd):
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        events.append(("replace", os.path.basename(os.fspath(dst))))
        return real_replace(src, dst, *args, **kwargs)

    def unlink(path, *args, **kwargs):
        events.append(("unlink", os.path.basename(os.fspath(path))))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "unlink", unlink)
    return events


def assert_durable(events: list[tuple[str, str]], name: str, folder: Path) -> None:
    """`name` was fsynced before its rename, and its folder after it."""
    renamed = max(i for i, e in enumerate(events) if e == ("replace", name))
    assert any(e[0] == "fsync" and e[1].startswith(f".{name}.") for e in events[:renamed]), f"{name} not fsynced"
    assert ("fsync", folder.name) in events[renamed:], f"the rename of {name} was not made durable"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names fsynced files through /proc")
def test_the_surface_is_on_disk_before_the_partial_is_removed(tmp_path, monkeypatch):
    events = record_file_events(monkeypatch)
    plane = make_probe().plane(steps=(3, 2), checkpoint_dir=tmp_path, checkpoint_every=2)
    assert_durable(events, META_NAME, tmp_path)  # the complete grid's partial: on disk when `plane` returns
    events.clear()
    plane.save_pretrained(tmp_path)
    removed = events.index(("unlink", META_NAME))
    for name in ("surface.safetensors", "surface.json"):
        assert_durable(events[:removed], name, tmp_path)


# --- 2. no write follows a planted link ------------------------------------------------------------------------


def tree(*roots: Path, skip: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `roots` but `skip`: its bytes and modification time."""
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and skip not in path.parents:
                out[str(path)] = (path.read_bytes(), path.stat().st_mtime_ns)
    return out


def test_a_run_touches_nothing_outside_out(model_dir, text_file, tmp_path, capsys):
    out = tmp_path / "out"
    before = tree(tmp_path, model_dir, skip=out)
    code, io = cli(line_argv(model_dir, text_file, out), capsys)
    assert code == 0, io.err
    assert tree(tmp_path, model_dir, skip=out) == before


def plant_links(folder: Path, names: list[str], victims: Path) -> dict[Path, bytes]:
    """A link at each name in `folder`, each to its own file in `victims`; returns victim -> its bytes."""
    victims.mkdir(exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    contents = {}
    for i, name in enumerate(names):
        victim = victims / f"victim-{i}.txt"
        victim.write_bytes(f"precious file {i}\n".encode())
        os.symlink(victim, folder / name)
        contents[victim] = victim.read_bytes()
    return contents


def old_temporaries(final: str) -> list[str]:
    """The predictable temporary names writers once used for `final` in this process."""
    pid = os.getpid()
    stem, dot, suffix = final.rpartition(".")
    return [f".{final}.tmp-{pid}", f"{final}.tmp-{pid}", f".{stem}.tmp-{pid}.{suffix}" if dot else f".{final}.tmp"]


def assert_untouched(victims: dict[Path, bytes]) -> None:
    for victim, content in victims.items():
        assert victim.read_bytes() == content, f"{victim} was written through a link"


def assert_regular(folder: Path, names: list[str]) -> None:
    for name in names:
        path = folder / name
        assert path.is_file() and not path.is_symlink(), f"{path} is still a link"


def test_cli_writes_never_follow_planted_links(model_dir, text_file, tmp_path, capsys):
    out = tmp_path / "out"
    finals = ["surface.json", "surface.safetensors", "plot_curve.png"]
    partials = [META_NAME, ARRAYS_NAME]
    names = finals + [t for f in finals + partials for t in old_temporaries(f)]
    victims = plant_links(out, names, tmp_path / "victims")
    code, io = cli(line_argv(model_dir, text_file, out, "--overwrite"), capsys)
    assert code == 0, io.err
    assert_untouched(victims)
    assert_regular(out, finals)
    assert Surface.from_pretrained(out).values.shape == (5,)


def _write_surface(folder: Path) -> None:
    Surface(np.array([-1.0, 0.0, 1.0]), np.array([2.0, 1.0, 2.0]), metadata={"kind": "line"}).save_pretrained(
        folder, overwrite=True
    )


def _write_plots(folder: Path) -> None:
    Surface(np.array([-1.0, 0.0, 1.0]), np.array([2.0, 1.0, 2.0]), metadata={"kind": "line"}).save_plots(folder)


def _write_partial(folder: Path) -> None:
    GridCheckpoint(folder, {"kind": "line"}).save(np.zeros(3), np.ones(3, dtype=bool), {})


def _write_direction(folder: Path) -> None:
    Direction({"w": torch.ones(2, 2)}, {"kind": "custom"}).save_pretrained(folder / "direction.safetensors")


def _write_report(folder: Path) -> None:
    x = np.array([-1.0, 0.0, 1.0])
    CompareReport({"a": Surface(x, x**2)}).save_pretrained(folder, overwrite=True)


def _write_trajectory(folder: Path) -> None:
    from hf_landscape.callbacks import LandscapeCallback

    callback = LandscapeCallback(folder, every_n_steps=1, overwrite=True)
    state = SimpleNamespace(global_step=0, is_world_process_zero=True, epoch=0.0, max_steps=1)
    callback.on_train_begin(None, state, None, model=build_gpt2(100, n_layer=1, n_embd=8))


def _write_plot_file(folder: Path) -> None:
    _write_surface(folder / "s")
    assert main(["plot", str(folder / "s"), "--out", str(folder / "figure.png")]) == 0


# writer -> (the writer, the files it writes, those of them that are read first and so not planted)
WRITERS = {
    "surface": (_write_surface, ["surface.json", "surface.safetensors"], []),
    "plots": (_write_plots, ["plot_curve.png"], []),
    "partial grid": (_write_partial, [META_NAME, ARRAYS_NAME], []),
    "direction": (_write_direction, ["direction.safetensors"], []),
    "compare report": (_write_report, ["report.json"], []),
    "trajectory": (_write_trajectory, ["trajectory.json", "step_00000000.safetensors"], ["trajectory.json"]),
    "plot command": (_write_plot_file, ["figure.png"], []),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_no_writer_follows_a_link_at_a_temporary_or_final_name(writer, tmp_path):
    write, finals, read_first = WRITERS[writer]
    folder = tmp_path / "out"
    planted = [f for f in finals if f not in read_first] + [t for f in finals for t in old_temporaries(f)]
    victims = plant_links(folder, planted, tmp_path / "victims")
    write(folder)
    assert_untouched(victims)
    assert_regular(folder, finals)


def test_a_link_planted_at_the_lock_is_replaced_not_followed(tmp_path):
    victims = plant_links(tmp_path / "out", [LOCK_NAME], tmp_path / "victims")
    _write_surface(tmp_path / "out")
    assert_untouched(victims)
    assert not os.path.lexists(tmp_path / "out" / LOCK_NAME)


# --- 3. the model comes back exactly as it was -----------------------------------------------------------------


def model_state(model: torch.nn.Module) -> dict:
    """Everything of the model a method could change: tensors, flags, gradients, hooks and replaced forwards."""
    hooks = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_state_dict_hooks",
        "_load_state_dict_pre_hooks",
    )
    return {
        "tensors": {n: t.detach().clone() for n, t in model.state_dict(keep_vars=True).items()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grad": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "hooks": {n: {h: list(getattr(m, h, {}).items()) for h in hooks} for n, m in model.named_modules()},
        "forwards": {n: m.__dict__.get("forward") for n, m in model.named_modules()},
        "config_attention": getattr(model.config, "_attn_implementation", None),
    }


def assert_same_state(model: torch.nn.Module, before: dict) -> None:
    after = model_state(model)
    assert after["training"] == before["training"], "train/eval flags changed"
    assert after["requires_grad"] == before["requires_grad"], "requires_grad changed"
    assert after["hooks"] == before["hooks"], "hooks changed"
    assert after["forwards"] == before["forwards"], "replaced forwards changed"
    assert after["config_attention"] == before["config_attention"]
    assert after["tensors"].keys() == before["tensors"].keys()
    for name, t in before["tensors"].items():
        assert torch.equal(after["tensors"][name], t), f"{name} changed"
    for name, g in before["grad"].items():
        assert (after["grad"][name] is None) == (g is None) and (g is None or torch.equal(after["grad"][name], g))


def user_set_state(model: torch.nn.Module) -> list:
    """What a user may have done to the model: a training model with frozen dropout and a frozen block, a collecting
    hook, a replaced forward, and gradients of a step not yet taken."""
    model.train()
    model.transformer.drop.eval()
    model.transformer.h[0].mlp.dropout.eval()
    model.transformer.h[1].attn.requires_grad_(False)
    seen: list = []
    model.transformer.h[0].register_forward_hook(lambda module, args, output: seen.append(1))
    ln = model.transformer.ln_f
    own = type(ln).forward.__get__(ln)
    ln.forward = lambda x: own(x)
    for p in list(model.parameters())[:3]:
        p.grad = torch.full_like(p, 0.25)
    return seen


def _trajectory_run(folder: Path, model: torch.nn.Module) -> Path:
    run = folder / "run"
    run.mkdir()
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.dim() == 2}
    snapshots = []
    for step in range(4):
        g = torch.Generator().manual_seed(step)
        snap = {n: (w + 0.01 * step * torch.randn(w.shape, generator=g)).contiguous() for n, w in weights.items()}
        save_file(snap, str(run / f"step_{step:08d}.safetensors"))
        snapshots.append({"step": step, "file": f"step_{step:08d}.safetensors"})
    (run / "trajectory.json").write_text(json.dumps({"format": "hf_landscape.trajectory", "snapshots": snapshots}))
    return run


METHODS = {
    "loss": lambda p, tmp: p.loss(),
    "evaluate": lambda p, tmp: p.evaluate((0.5,), p.directions(0, axes=1), details=True),
    "line": lambda p, tmp: p.line(steps=3),
    "plane": lambda p, tmp: p.plane(steps=(2, 2)),
    "lora plane": lambda p, tmp: p.plane(steps=(2, 2), directions="lora", rank=2),
    "stacked points": lambda p, tmp: LandscapeProbe(p.model, p.objective, progress=False, points_per_forward=2).plane(
        steps=(2, 2)
    ),
    "sharpness": lambda p, tmp: p.sharpness(rho=0.05, kind="worst", steps=1),
    "average sharpness": lambda p, tmp: p.sharpness(rho=0.05, kind="average", samples=2),
    "trace": lambda p, tmp: p.hessian_trace(samples=2),
    "eigenvalues": lambda p, tmp: p.hessian_eigenvalues(k=1, max_iter=3),
    "hutch++ trace": lambda p, tmp: p.hessian_trace(samples=4, method="hutch++", per_block=True),
    "gauss-newton eigenvalues": lambda p, tmp: p.hessian_eigenvalues(k=1, max_iter=3, operator="ggn"),
    "finite-difference eigenvalues": lambda p, tmp: p.hessian_eigenvalues(k=1, max_iter=3, hvp="finite_difference"),
    "fisher spectrum": lambda p, tmp: p.hessian_spectrum(steps=3, operator="fisher", hvp="finite_difference"),
    "spectrum": lambda p, tmp: p.hessian_spectrum(steps=3, probes=2),
    "pac-bayes sharpness": lambda p, tmp: p.sharpness(kind="pac_bayes", target=0.1, samples=2, max_evaluations=3),
    "critical sharpness": lambda p, tmp: p.critical_sharpness(per_block=True),
    "hessian plane": lambda p, tmp: p.plane(steps=(2, 2), directions="hessian", max_iter=4, tol=0.5),
    "interpolation": lambda p, tmp: p.interpolate(build_gpt2(100, seed=1), steps=3),
    "directional derivatives": lambda p, tmp: p.directional_derivatives(p.plane(steps=(2, 2))),
    "token loss map": lambda p, tmp: p.token_loss_map([-1.0, 1.0]),
    "trajectory": lambda p, tmp: p.trajectory_plane(_trajectory_run(tmp, p.model), steps=(2, 2)),
    "auto span": lambda p, tmp: p.line(steps=3, span="auto", rise=0.5),
    "adversarial": lambda p, tmp: p.directions(kind="adversarial", axes=2, radius=0.1, steps=2),
    "curve": lambda p, tmp: p.connect(build_gpt2(100, seed=1), steps=3, train_steps=2),
    "plane through": lambda p, tmp: p.plane_through(build_gpt2(100, seed=1), build_gpt2(100, seed=2), steps=2),
    "basin": lambda p, tmp: p.basin(drop=0.5, seeds=[0], steps=2, rounds=1),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_gives_the_model_back_exactly(method, tmp_path):
    probe = make_probe()
    seen = user_set_state(probe.model)
    before = model_state(probe.model)
    METHODS[method](probe, tmp_path)
    assert_same_state(probe.model, before)
    seen.clear()
    probe.model(torch.tensor([IDS[0]]))
    assert seen == [1], "the user's hook no longer runs"


INTERRUPTED = ["line", "plane", "lora plane", "stacked points", "interpolation", "sharpness", "trace"]
INTERRUPTED += ["hutch++ trace", "finite-difference eigenvalues", "fisher spectrum", "spectrum", "pac-bayes sharpness"]
INTERRUPTED += ["critical sharpness", "hessian plane"]
INTERRUPTED += ["auto span", "adversarial", "curve", "plane through", "basin"]


@pytest.mark.parametrize("method", INTERRUPTED)
def test_every_method_interrupted_midway_gives_the_model_back_exactly(method, tmp_path, monkeypatch):
    probe = make_probe()
    user_set_state(probe.model)
    before = model_state(probe.model)
    calls = {"n": 0}
    original = torch.nn.Module.__call__

    def interrupting(module, *args, **kwargs):
        if module is probe.model.transformer.h[1]:
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
        return original(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__call__", interrupting)
    with pytest.raises(KeyboardInterrupt):
        METHODS[method](probe, tmp_path)
    monkeypatch.undo()
    assert_same_state(probe.model, before)


def test_a_peft_models_inner_flags_come_back(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(build_llama(100), LoraConfig(r=2, target_modules=["q_proj", "v_proj"], lora_dropout=0.1))
    model.train()
    model.base_model.model.model.layers[0].eval()  # a block the user froze
    probe = LandscapeProbe(model, CausalLMObjective({"input_ids": IDS}), progress=False)
    before = model_state(model)
    probe.loss()
    probe.line(steps=3, direction="adapter")
    probe.plane(steps=(2, 2), directions="lora", rank=2)
    probe.sharpness(rho=0.05, kind="worst", steps=1)
    assert_same_state(model, before)


# Benchmark objectives: choices scored in one forward per batch, and greedy decoding (several forwards per point).
MC_DATA = {"question": TEXTS[:4], "choices": [["the loss", "a river"]] * 4, "answer": [0, 1, 0, 1]}


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer()


def benchmark_probe(kind: str, tokenizer) -> LandscapeProbe:
    if kind == "multiple choice":
        objective = MultipleChoiceObjective(MC_DATA, tokenizer, batch_size=2)
    else:
        objective = GenerationObjective(TEXTS[:4], tokenizer, "refusal", max_new_tokens=4, batch_size=2)
    return LandscapeProbe(build_gpt2(len(tokenizer)), objective, progress=False)


BENCHMARK_GRIDS = {
    "multiple choice: line": lambda p: p.line(steps=3),
    "multiple choice: plane over seeds": lambda p: p.plane(steps=(2, 2), seed=[0, 1]),
    "multiple choice: stacked points": lambda p: LandscapeProbe(
        p.model, p.objective, progress=False, points_per_forward=2
    ).plane(steps=(2, 2)),
    "multiple choice: lora plane": lambda p: p.plane(steps=(2, 2), directions="lora", rank=2),
    "multiple choice: sharpness": lambda p: p.sharpness(rho=0.05, kind="worst", steps=1),
    "multiple choice: choice log-likelihoods": lambda p: p.objective.choice_loglikelihoods(p.model),
    "generation: line": lambda p: p.line(steps=3),
    "generation: plane over seeds": lambda p: p.plane(steps=(2, 2), seed=[0, 1]),
    "generation: lora plane": lambda p: p.plane(steps=(2, 2), directions="lora", rank=2),
    "generation: evaluate": lambda p: p.evaluate((0.5,), p.directions(0, axes=1), details=True),
    "generation: answers": lambda p: p.objective.generate(p.model),
}


@pytest.mark.parametrize("grid", list(BENCHMARK_GRIDS))
def test_benchmark_objectives_give_the_model_back_exactly(grid, bpe):
    probe = benchmark_probe(grid.split(":")[0], bpe)
    seen = user_set_state(probe.model)
    before = model_state(probe.model)
    BENCHMARK_GRIDS[grid](probe)
    assert_same_state(probe.model, before)
    seen.clear()
    probe.model(torch.tensor([IDS[0]]))
    assert seen == [1], "the user's hook no longer runs"


@pytest.mark.parametrize("grid", [g for g in BENCHMARK_GRIDS if "log-likelihoods" not in g and "answers" not in g])
def test_benchmark_objectives_interrupted_midway_give_the_model_back_exactly(grid, bpe, monkeypatch):
    probe = benchmark_probe(grid.split(":")[0], bpe)
    user_set_state(probe.model)
    before = model_state(probe.model)
    calls = {"n": 0}
    original = torch.nn.Module.__call__

    def interrupting(module, *args, **kwargs):
        # The second pass through the last block: the second batch of choices, or the first decoding step after
        # the prompts (mid-generation, at a perturbed point).
        if module is probe.model.transformer.h[1]:
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
        return original(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__call__", interrupting)
    with pytest.raises(KeyboardInterrupt):
        BENCHMARK_GRIDS[grid](probe)
    monkeypatch.undo()
    assert_same_state(probe.model, before)


def test_a_scorer_failing_mid_grid_is_a_landscape_error_and_the_model_comes_back(bpe):
    calls = []

    def scorer(prompt, generation):
        calls.append(1)
        if len(calls) == 7:  # the check when the objective is made, the first point, then the second's second prompt
            raise ValueError("cannot score")
        return 0.0

    model = build_gpt2(len(bpe))
    probe = LandscapeProbe(model, GenerationObjective(TEXTS[:4], bpe, scorer, max_new_tokens=3), progress=False)
    user_set_state(model)
    before = model_state(model)
    with pytest.raises(LandscapeError, match="`scorer` .* raised ValueError \\(cannot score\\) on prompt 1"):
        probe.plane(steps=(2, 2))
    assert_same_state(model, before)


# --- 4. no token in any text -----------------------------------------------------------------------------------

TOKEN = "hf_" + "Zq7RkW2pLx9VbN4mTc8HyJ3dFs6GaQe1Uo"


def texts_of(error: BaseException) -> str:
    """Every text an error carries: its message and repr, its whole chain of causes, and the printed traceback."""
    parts, seen, e = [], set(), error
    stack = [error]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        parts += [str(e), repr(e), *[str(a) for a in getattr(e, "args", ())]]
        stack += [e.__cause__, e.__context__]
    parts.append("".join(traceback.format_exception(error)))
    return "\n".join(parts)


def assert_no_secret(text: str) -> None:
    assert TOKEN not in text
    assert "Bearer hf_" not in text
    assert TOKEN[3:20] not in text


@pytest.fixture(params=["argument", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "token file"])
def echoing_hub(request, monkeypatch):
    """A Hub on 127.0.0.1 that echoes the Authorization header in every error, and the token from one source;
    yields (server, the `token=` to pass)."""
    with running_hub(token=TOKEN, echo_authorization=True) as server:
        source = request.param
        if source in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            monkeypatch.setenv(source, TOKEN)
        if source == "token file":
            Path(os.environ["HF_TOKEN_PATH"]).write_text(TOKEN)
        server.create_repo("me/landscape")
        yield server, (TOKEN if source == "argument" else None)
        monkeypatch.undo()


def _load_surface(server, token):
    server.fail_next(r"/resolve/", 400, times=10)
    Surface.from_pretrained("me/landscape", token=token)


def _load_model(server, token):
    from hf_landscape.hub import load_model

    server.fail_next(r"/api/models/", 500, times=10)
    load_model("me/landscape", token=token)


def _push(server, token):
    server.fail_next(r"/commit/", 500, times=10)
    Surface(np.array([-1.0, 0.0, 1.0]), np.array([2.0, 1.0, 2.0]), metadata={"kind": "line"}).push_to_hub(
        "me/landscape", token=token
    )


def _push_dataset(server, token):
    server.fail_next(r"/commit/", 500, times=10)
    Surface(np.array([-1.0, 0.0, 1.0]), np.array([2.0, 1.0, 2.0]), metadata={"kind": "line"}).push_to_hub(
        "me/landscape", token=token, repo_type="dataset"
    )


def _publish_space(server, token):
    from hf_landscape.hub.space import publish_space

    server.fail_next(r"/commit/", 500, times=10)
    publish_space("me/space", Surface(np.array([-1.0, 0.0, 1.0]), np.array([2.0, 1.0, 2.0])), token=token)


def _list_landscape(server, token):
    from hf_landscape.hub.sources import load_landscape

    server.fail_next(r"/tree/", 400, times=10)
    load_landscape(["me/landscape"], token=token)


HUB_CALLS = {"load surface": (_load_surface, SurfaceError), "load model": (_load_model, ModelError)}
HUB_CALLS["push"] = (_push, HubError)
HUB_CALLS["push dataset"] = (_push_dataset, HubError)
HUB_CALLS["publish space"] = (_publish_space, HubError)
HUB_CALLS["landscape by repo id"] = (_list_landscape, SurfaceError)


@pytest.mark.parametrize("call", list(HUB_CALLS))
def test_no_token_in_errors_or_logs_from_an_echoing_hub(call, echoing_hub, caplog):
    server, token = echoing_hub
    caplog.set_level(logging.DEBUG)
    fn, error = HUB_CALLS[call]
    with pytest.raises(error) as info:
        fn(server, token)
    assert server.requests_matching(r".", None) and any(r.has_auth for r in server.requests)  # the token was sent
    assert_no_secret(texts_of(info.value))
    # Every line hf_landscape logs, and every line any library logs at INFO and above (the HTTP client's own DEBUG
    # trace of request headers is that library's, shown only to who turns it on).
    ours = [r for r in caplog.records if r.name.startswith("hf_landscape") or r.levelno >= logging.INFO]
    assert_no_secret("\n".join(r.getMessage() for r in ours))


def test_no_token_in_the_command_lines_error(echoing_hub, tmp_path, capsys):
    server, _ = echoing_hub
    server.fail_next(r"/resolve/", 400, times=10)
    code, io = cli(["plot", "me/landscape", "--out", tmp_path / "x.png"], capsys)
    assert code == 1 and "me/landscape" in io.err
    assert_no_secret(io.err + io.out)


def test_token_shaped_text_never_reaches_an_error_message():
    error = LandscapeError(f"the server said: Authorization: Bearer abc.def-123 and {TOKEN}")
    assert_no_secret(texts_of(error))
    assert "abc.def-123" not in str(error)


# --- 6. one run per folder -------------------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\\n".encode())
    print("locked", flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def lock_holder(tmp_path):
    """Another process holding the lock of `tmp_path / "out"`; yields its pid."""
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out / LOCK_NAME)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout.readline().strip() == b"locked"
        yield proc.pid
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_second_run_on_the_same_out_is_refused_naming_the_holder(
    lock_holder, model_dir, text_file, tmp_path, capsys, monkeypatch
):
    import hf_landscape.hub as hub

    monkeypatch.setattr(hub, "resolve_model", lambda *a, **k: pytest.fail("the model was loaded"))
    code, io = cli(line_argv(model_dir, text_file, tmp_path / "out"), capsys)
    assert code == 1
    (line,) = error_lines(io.err)
    assert f"pid {lock_holder}" in line and "--out" in line and "another folder" in line
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [LOCK_NAME]


def test_a_library_grid_into_a_locked_folder_is_refused_before_any_point(lock_holder, tmp_path, monkeypatch):
    calls = count_evaluations(monkeypatch)
    with pytest.raises(SurfaceError, match=rf"`checkpoint_dir` .* in use .*pid {lock_holder}"):
        make_probe().line(steps=3, checkpoint_dir=tmp_path / "out")
    assert calls == []
    with pytest.raises(SurfaceError, match=rf"`save_directory` .* in use .*pid {lock_holder}"):
        _write_surface(tmp_path / "out")


def test_the_lock_is_released_when_the_run_ends(tmp_path, model_dir, text_file, capsys):
    out = tmp_path / "out"
    assert cli(line_argv(model_dir, text_file, out, "--no-plots"), capsys)[0] == 0
    assert not os.path.lexists(out / LOCK_NAME)
    assert cli(line_argv(model_dir, text_file, out, "--no-plots", "--overwrite"), capsys)[0] == 0
