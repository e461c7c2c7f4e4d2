"""Train a small GPT-2 with `transformers.Trainer`, record its trajectory, and draw the path on the loss surface.

`LandscapeCallback` streams parameter snapshots to safetensors every few steps; `probe.trajectory_plane` builds
the top two PCA directions of θ_t − θ_final (Li et al. 2018, section 7), evaluates the plane around the final
weights and plots the projected path with each checkpoint's true loss. Then, on the same model:

- the loss along the piecewise-linear path first snapshot → middle snapshot → final weights, extrapolated on both
  sides, with the barrier of each segment (`probe.interpolate([...])`, `interpolation_barrier`);
- a random-direction plane over five direction seeds (mean and spread per point) and the flatness figures with
  their 95% intervals over the seeds (`plane(seed=[...])`, `comparison.summarize`);
- the gradient projected on a random plane, drawn as arrows over its contours (`probe.directional_derivatives`);
- a per-token loss map along one direction and the tokens whose loss rises most (`probe.token_loss_map`);
- sharpness with intervals: top Hessian eigenvalues with their residual bounds, the Hutchinson trace and adaptive
  (ASAM) sharpness, each with its interval.

Text: Tiny Shakespeare (`text/tinyshakespeare.txt` under `--data-dir`, by default the shared data folder beside the
repository, `../shared/data` from its root) when present, else the demo's built-in sample. CPU, a few minutes.

    python examples/trajectory_pca.py [--steps 120] [--data-dir DIR] [--out examples/out/trajectory_pca]
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, Trainer, TrainingArguments

from hf_landscape import CausalLMObjective, LandscapeProbe
from hf_landscape.callbacks import LandscapeCallback
from hf_landscape.cli.demo import demo_text
from hf_landscape.comparison import interpolation_barrier, summarize
from hf_landscape.directions.trajectory import load_snapshot, read_trajectory

PROVENANCE = {"name_or_path": "gpt2-2x64-tinyshakespeare"}  # the model trained here
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # ../shared/data from the repository root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120, help="training steps")
    parser.add_argument("--every", type=int, default=10, help="snapshot every N steps")
    parser.add_argument("--grid", type=int, default=11, help="plane points per axis")
    parser.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="the shared data folder (default ../shared/data)"
    )
    parser.add_argument("--out", default="examples/out/trajectory_pca")
    args = parser.parse_args()
    shakespeare = args.data_dir / "text" / "tinyshakespeare.txt"
    torch.manual_seed(0)
    out = Path(args.out)
    text = shakespeare.read_text(encoding="utf-8")[:200_000] if shakespeare.is_file() else demo_text() * 50
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(
        [text],
        trainers.BpeTrainer(vocab_size=512, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    ids = tokenizer(text)["input_ids"]
    blocks = [ids[i : i + 64] for i in range(0, len(ids) - 64, 64)]
    train, held_out = blocks[:-32], blocks[-32:]
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=512, n_positions=64))

    class Blocks(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(train)

        def __getitem__(self, i: int) -> dict:
            x = torch.tensor(train[i])
            return {"input_ids": x, "labels": x}

    run_dir = out / "run"
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(out / "trainer"),
            max_steps=args.steps,
            per_device_train_batch_size=16,
            learning_rate=3e-3,
            logging_steps=args.every,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
        ),
        train_dataset=Blocks(),
        callbacks=[LandscapeCallback(run_dir, every_n_steps=args.every, overwrite=True)],
    )
    trainer.train()
    objective = CausalLMObjective({"input_ids": held_out}, tokenizer, batch_size=16)
    probe = LandscapeProbe(model, objective, provenance=PROVENANCE)
    plane = probe.trajectory_plane(run_dir, steps=(args.grid, args.grid))
    plane.save_pretrained(out / "plane", overwrite=True)
    plane.save_plots(out / "plane")
    info = plane.metadata["trajectory"]
    summary = {
        "explained_variance_ratio": info["explained_variance_ratio"],
        "checkpoints": len(info["steps"]),
        "first_checkpoint_loss": info["losses"][0],
        "final_loss": probe.loss(),
    }
    summary.update(statistics(model, objective, run_dir, args.grid, out))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


def statistics(model, objective, run_dir: Path, grid: int, out: Path) -> dict:
    """Path through checkpoints, seed spread, token map and sharpness with intervals; figures under `out`."""
    steps = [int(e["step"]) for e in read_trajectory(run_dir)["snapshots"]]
    early, middle = (copy.deepcopy(model) for _ in range(2))
    early.load_state_dict(load_snapshot(run_dir, steps[0]), strict=False)
    middle.load_state_dict(load_snapshot(run_dir, steps[len(steps) // 2]), strict=False)
    start = {"name_or_path": f"{PROVENANCE['name_or_path']} (step {steps[0]})"}
    path = LandscapeProbe(early, objective, provenance=start).interpolate([middle, model], span=(-0.25, 2.25), steps=51)
    path.save_pretrained(out / "path", overwrite=True)
    path.plot().savefig(out / "path.png", dpi=150)

    probe = LandscapeProbe(model, objective, provenance=PROVENANCE)
    spread = probe.plane(steps=(grid, grid), seed=[0, 1, 2, 3, 4])
    spread.save_pretrained(out / "spread", overwrite=True)
    spread.plot(kind="spread").savefig(out / "spread.png", dpi=150)

    arrows = probe.directional_derivatives(probe.plane(steps=(9, 9), seed=0), stride=2)
    arrows.plot(kind="contour").savefig(out / "gradient_arrows.png", dpi=150)  # −∇L at every 2nd point

    token_map = probe.token_loss_map([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0], seed=0)
    token_map.plot(example=0, max_tokens=48).savefig(out / "token_map.png", dpi=120)

    eigen = probe.hessian_eigenvalues(k=2, tol=1e-3, max_iter=60)
    trace = probe.hessian_trace(samples=30)
    asam = probe.sharpness(rho=0.05, kind="adaptive", steps=5)
    row = summarize(spread)
    return {
        "path_barriers": {
            "first→middle": interpolation_barrier(path, (0, 1)),
            "middle→final": interpolation_barrier(path, (1, 2)),
            "first→final along the path": interpolation_barrier(path, (0, 2)),
        },
        "seed_spread": {
            k: row[k] for k in ("curvature_mean", "curvature_mean_ci", "mean_increase", "mean_increase_ci")
        },
        "max_spread_over_seeds": float(spread.spread.max()),
        "top_tokens_at_alpha_1": [(r["token"], round(r["rise"], 3)) for r in token_map.top(5, alpha=1.0)],
        "hessian_top2": eigen.eigenvalues.tolist(),
        "hessian_top2_intervals": eigen.intervals.tolist(),
        "hessian_trace": [trace.trace, list(trace.interval)],
        "adaptive_sharpness": [asam.sharpness, list(asam.interval), asam.interval_over],
    }


if __name__ == "__main__":
    main()
