"""The slices of docs/slices.md on the tiny models of that page, in seconds on a CPU: a trained Bézier curve beside
the straight path, the plane through three models with the curve on it, and a random × worst-case plane.

    python examples/slices_tiny.py [--out examples/out/slices_tiny]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from hf_landscape import CausalLMObjective, LandscapeProbe  # noqa: E402
from hf_landscape.objectives.loss import differentiable_loss  # noqa: E402

DATA = CausalLMObjective({"input_ids": [[(i + k) % 8 + 1 for k in range(12)] for i in range(4)]})


def trained(seed: int) -> torch.nn.Module:
    """The page's tiny GPT-2, trained from its own initialization for 40 Adam steps."""
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=10, n_positions=16, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        differentiable_loss(model, DATA).backward()
        optimizer.step()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=31, help="points per axis of the planes, and of the curve")
    parser.add_argument("--out", default="examples/out/slices_tiny")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_a, model_b, model_c = trained(0), trained(1), trained(2)
    probe = LandscapeProbe(model_a, DATA, progress=False)
    curve = probe.connect(model_b, steps=args.steps, train_steps=200, lr=1e-2)
    fig = curve.plot()
    fig.axes[0].set_xlabel("t (0: model a, 1: model b)")
    fig.savefig(out / "slices_curve.png", dpi=110)
    through = probe.plane_through(model_b, model_c, steps=args.steps, curve=curve)
    through.plot("contour").savefig(out / "slices_three_models.png", dpi=110)
    (random_axis,) = probe.directions(0, axes=1)
    (worst_axis,) = probe.directions(kind="adversarial", axes=1, radius=0.5, steps=10)
    mixed = probe.plane(steps=args.steps, span=(-1.0, 1.0), directions=[random_axis, worst_axis])
    fig = mixed.plot("contour")
    fig.axes[0].set_xlabel("random direction (α)")
    fig.axes[0].set_ylabel("worst-case direction at r = 0.5 (β)")
    fig.savefig(out / "slices_worst_case.png", dpi=110)
    basin = probe.basin(drop=0.5, seeds=[0, 1, 2, 3, 4], steps=10)
    results = {
        "curve": {k: curve.metadata["curve"][k] for k in ("barrier", "linear_barrier")},
        "points": through.metadata["points"],
        "point_losses": through.metadata["point_losses"],
        "worst_case_loss_at_radius": worst_axis.config["loss_at_radius"],
        "basin": basin.to_dict(),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    print(json.dumps(results, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
