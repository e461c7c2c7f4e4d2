"""hf_landscape, through its public API only."""

from __future__ import annotations

from .common import Context, Result

NAME = "hf_landscape"
DIST = "hf_landscape"
METHOD = (
    "Gaussian directions, filter-normalized (output units: rows of nn.Linear/Embedding, columns of GPT-2's "
    "Conv1D), 1-D parameters left alone (Li et al.'s ignore='biasbn'); grid linspace(-1, 1, steps)^2; each "
    "point set in place from the saved weights; weights restored at the end."
)


def prepare(ctx: Context) -> None:
    import hf_landscape  # noqa: F401  (imported before the timing, as for every tool)


def run(ctx: Context, state: None = None) -> Result:
    from hf_landscape import CausalLMObjective, LandscapeProbe

    ids = ctx.ids
    objective = CausalLMObjective({"input_ids": ids}, max_length=ids.shape[1], batch_size=ids.shape[0])
    probe = LandscapeProbe(ctx.model, objective, progress=False)
    plane = probe.plane(steps=(ctx.steps, ctx.steps), span=((-1.0, 1.0), (-1.0, 1.0)), seed=ctx.seed)
    return Result(values=plane.values, x=plane.x, y=plane.y, centre=plane.centre)
