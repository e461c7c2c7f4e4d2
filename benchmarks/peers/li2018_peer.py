"""Li et al. 2018 reference code (github.com/tomgoldstein/loss-landscape), driven through its own functions.

The code is not on PyPI and is never copied into this repository: pass a local clone with
`--li-repo PATH`. The adapter imports the clone's `net_plotter`, `evaluation` and `scheduler` modules
and reproduces the loop of `plot_surface.crunch` (without MPI and without writing the HDF5 surface
file after every point), as `plot_surface.py --x=-1:1:N --y=-1:1:N --xnorm filter --xignore biasbn
--ynorm filter --yignore biasbn [--cuda]` runs it:

    w = net_plotter.get_weights(net)                       # the net is on the CPU, as model_loader gives it
    d = [net_plotter.create_random_direction(net, 'weights', 'biasbn', 'filter') for x and y]
    inds, coords, _ = scheduler.get_job_indices(losses, xcoordinates, ycoordinates, None)
    for each point: net_plotter.set_weights(net, w, d, coord)       # θ + x·dx + y·dy computed on the CPU
                    evaluation.eval_loss(net, criterion, loader, use_cuda)  # net.cuda() copies it over

Adapter:
- the net is a thin `nn.Module` around the GPT-2 returning `logits[:, :-1]` (float32) as (N, V, L-1),
  the layout `nn.CrossEntropyLoss` takes for sequences, and the loader yields (ids, ids[:, 1:]); the
  criterion is a plain `nn.CrossEntropyLoss()` (eval_loss requires one), whose mean over N·(L-1)
  tokens is the shared loss. eval_loss's "accuracy" is computed and ignored.
- filters: the code's filters are slices along dim 0 of each weight, so for GPT-2's transposed
  Conv1D they are input units (hf_landscape uses output units).
- dtype: `set_weights` adds `torch.Tensor(d).type(type(w))`, which is float32, so with a bfloat16
  model the weights become float32 at the first point and the grid is evaluated in float32.
- imports: `net_plotter` imports h5py and `model_loader` (CIFAR-10 models, torchvision) at module
  level; the functions used here need neither, so each is replaced by an empty module only when it
  cannot be imported.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

import numpy as np
import torch

from .common import Context, Result, centre_index

NAME = "li2018"
DIST = None
METHOD = (
    "tomgoldstein/loss-landscape: create_random_direction('weights','biasbn','filter') (Gaussian, "
    "filter = dim-0 slices, 1-D params zeroed); per point set_weights (θ + x·dx + y·dy on the CPU) + "
    "eval_loss (net.cuda() copies the weights over on GPU); grid linspace(-1,1)²"
)


class LogitsNet(torch.nn.Module):
    """`net(ids)` -> next-token logits as (N, V, L-1) float32, what nn.CrossEntropyLoss takes for sequences."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=ids, use_cache=False).logits
        return logits[:, :-1].float().transpose(1, 2)


def _import_li(repo: str) -> tuple[types.ModuleType, types.ModuleType, types.ModuleType, list[str]]:
    if not os.path.isfile(os.path.join(repo, "net_plotter.py")):
        raise FileNotFoundError(
            f"--li-repo {repo!r} has no net_plotter.py; pass a clone of https://github.com/tomgoldstein/loss-landscape"
        )
    repo = os.path.abspath(repo)
    if repo not in sys.path:
        sys.path.insert(0, repo)
    stubbed = []
    for name in ("h5py", "model_loader"):
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
            stubbed.append(name)
    net_plotter = importlib.import_module("net_plotter")
    evaluation = importlib.import_module("evaluation")
    scheduler = importlib.import_module("scheduler")
    return net_plotter, evaluation, scheduler, stubbed


def prepare(ctx: Context) -> tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
    if not ctx.li_repo:
        raise RuntimeError("pass --li-repo PATH (a clone of tomgoldstein/loss-landscape)")
    net_plotter, evaluation, scheduler, stubbed = _import_li(ctx.li_repo)
    if stubbed:
        ctx.notes.append(f"empty stand-ins for unused imports: {', '.join(stubbed)}")
    return net_plotter, evaluation, scheduler


def run(ctx: Context, modules: tuple[types.ModuleType, types.ModuleType, types.ModuleType]) -> Result:
    net_plotter, evaluation, scheduler = modules
    use_cuda = ctx.device == "cuda"
    n = ctx.steps

    net = LogitsNet(ctx.model)
    dtype = next(net.parameters()).dtype
    net.cpu()  # plot_surface.py loads the net on the CPU; eval_loss moves it with net.cuda()
    net.eval()
    w = net_plotter.get_weights(net)
    torch.manual_seed(ctx.seed)
    xdirection = net_plotter.create_random_direction(net, "weights", "biasbn", "filter")
    ydirection = net_plotter.create_random_direction(net, "weights", "biasbn", "filter")
    d = [xdirection, ydirection]

    ids = ctx.ids.cpu()
    loader = [(ids, ids[:, 1:])]
    criterion = torch.nn.CrossEntropyLoss()
    xcoordinates = np.linspace(-1.0, 1.0, n)
    ycoordinates = np.linspace(-1.0, 1.0, n)
    losses = -np.ones(shape=(len(xcoordinates), len(ycoordinates)))
    inds, coords, _ = scheduler.get_job_indices(losses, xcoordinates, ycoordinates, None)
    for count, ind in enumerate(inds):
        net_plotter.set_weights(net, w, d, coords[count])
        loss, _acc = evaluation.eval_loss(net, criterion, loader, use_cuda)
        losses.ravel()[ind] = loss
    # inds index meshgrid(x, y).ravel(), whose shape is (len(y), len(x)): losses[j, i] is at (x[i], y[j]).
    c = centre_index(n)
    if dtype != torch.float32:
        ctx.notes.append(f"set_weights turned the {str(dtype).replace('torch.', '')} weights into float32")
    return Result(values=losses, x=xcoordinates, y=ycoordinates, centre=float(losses[c, c]))
