"""Train a small GPT-2 with `transformers.Trainer`, record its trajectory, and draw the path on the loss surface.

`LandscapeCallback` streams parameter snapshots to safetensors every few steps; `probe.trajectory_plane` builds
the top two PCA directions of θ_t − θ_final (Li et al. 2018, section 7), evaluates the plane around the final
weights and plots the projected path with each checkpoint's true loss. Text: Tiny Shakespeare
(`../shared/data/text/tinyshakespeare.txt`) when present, else the demo's built-in sample. CPU, a few minutes.

    python examples/trajectory_pca.py [--steps 120] [--out examples/out/trajectory_pca]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, Trainer, TrainingArguments

from hf_landscape import CausalLMObjective, LandscapeProbe
from hf_landscape.callbacks import LandscapeCallback
from hf_landscape.cli.demo import demo_text

SHAKESPEARE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "text" / "tinyshakespeare.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120, help="training steps")
    parser.add_argument("--every", type=int, default=10, help="snapshot every N steps")
    parser.add_argument("--grid", type=int, default=11, help="plane points per axis")
    parser.add_argument("--out", default="examples/out/trajectory_pca")
    args = parser.parse_args()
    torch.manual_seed(0)
    out = Path(args.out)
    text = SHAKESPEARE.read_text(encoding="utf-8")[:200_000] if SHAKESPEARE.is_file() else demo_text() * 50
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
    objective = CausalLMObjective({"input_ids": held_out}, batch_size=16)
    probe = LandscapeProbe(model, objective)
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
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
