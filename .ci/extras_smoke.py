"""Smoke checks of each optional extra, run inside a fresh virtual environment that has `.[EXTRA]` installed.

`python .ci/extras_smoke.py EXTRA` exercises what the extra promises, offline, on tiny models built from configs
(the `demo` extra is checked by `make demo` itself). Used by `.ci/extras`.
"""

from __future__ import annotations

import sys
import tempfile

import torch
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

from hf_landscape import DependencyError


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32))


def core() -> None:
    from hf_landscape import CausalLMObjective, LandscapeProbe, Surface

    probe = LandscapeProbe(tiny_gpt2(), CausalLMObjective({"input_ids": [[1, 2, 3, 4, 5], [6, 7, 8]]}), progress=False)
    plane = probe.plane(steps=3, seed=0)
    folder = tempfile.mkdtemp()
    plane.save_pretrained(folder)
    names = [p.name for p in plane.save_plots(folder)]
    assert Surface.from_pretrained(folder).values.shape == (3, 3), "surface round trip"
    assert names == ["plot_contour.png", "plot_heatmap.png", "plot_surface.png"], names
    assert probe.hessian_eigenvalues(k=1).eigenvalues.shape == (1,)
    assert probe.plane(steps=3, directions="lora", rank=2).values.shape == (3, 3)
    try:  # objectives' data need the `data` extra, and say so before any work
        text_classification()
    except DependencyError as err:
        assert "hf_landscape[data]" in str(err), str(err)
    else:
        raise AssertionError("a classification objective was made without `datasets`")


def tiny_bert(num_labels: int = 2) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=30)
    return BertForSequenceClassification(BertConfig(**config.to_dict(), num_labels=num_labels))


def text_classification():
    from hf_landscape import TextClassificationObjective

    return TextClassificationObjective({"input_ids": [[2, 5, 6, 3], [2, 7, 3], [2, 8, 9, 3]], "label": [1, 0, 1]})


def data() -> None:
    from hf_landscape import LandscapeProbe

    plane = LandscapeProbe(tiny_bert(), text_classification(), progress=False).plane(steps=3, seed=0)
    assert plane.values.shape == (3, 3) and "accuracy" in plane.metrics, sorted(plane.metrics)


def glue() -> None:
    from hf_landscape import GlueObjective, LandscapeProbe

    torch.manual_seed(0)
    config = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=30)
    ids = [[2, 5, 6, 3], [2, 7, 3], [2, 8, 9, 10, 3], [2, 11, 3]]
    for task, num_labels, labels, metrics in (
        ("cola", 2, [1, 0, 1, 0], ["matthews_correlation"]),
        ("mrpc", 2, [1, 0, 1, 0], ["accuracy", "f1"]),
        ("stsb", 1, [0.5, 4.0, 2.5, 1.0], ["pearson", "spearmanr"]),
    ):
        model = BertForSequenceClassification(BertConfig(**config.to_dict(), num_labels=num_labels))
        objective = GlueObjective(task, data={"input_ids": ids, "label": labels})
        plane = LandscapeProbe(model, objective, progress=False).plane(steps=3)
        assert sorted(plane.metrics) == sorted(metrics), (task, sorted(plane.metrics))


def lora() -> None:
    from peft import LoraConfig, get_peft_model

    from hf_landscape import CausalLMObjective, LandscapeProbe

    model = get_peft_model(tiny_gpt2(), LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True))
    probe = LandscapeProbe(model, CausalLMObjective({"input_ids": [[1, 2, 3, 4, 5]]}), progress=False)
    assert probe.plane(steps=3, directions="adapter").values.shape == (3, 3)


def multi_gpu() -> None:
    import os
    import subprocess

    script = (
        "import torch\n"
        "from transformers import GPT2Config, GPT2LMHeadModel\n"
        "from hf_landscape import CausalLMObjective, LandscapeProbe\n"
        "from hf_landscape.engine import distributed_state\n"
        "torch.manual_seed(0)\n"
        "model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32))\n"
        "probe = LandscapeProbe(model, CausalLMObjective({'input_ids': [[1, 2, 3, 4, 5]]}), progress=False)\n"
        "assert distributed_state().num_processes == 2\n"
        "assert probe.plane(steps=3).values.shape == (3, 3)\n"
    )
    path = os.path.join(tempfile.mkdtemp(), "run.py")
    with open(path, "w") as f:
        f.write(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", path]
    subprocess.run(cmd, check=True, timeout=300, env=env)  # torchrun; accelerate's PartialState joins the group


def train() -> None:
    from transformers import Trainer, TrainingArguments

    from hf_landscape import LandscapeCallback

    folder = tempfile.mkdtemp()
    rows = [{"input_ids": [1, 2, 3, 4], "labels": [1, 2, 3, 4]}] * 4
    args = TrainingArguments(folder + "/out", max_steps=2, per_device_train_batch_size=2, report_to=[], use_cpu=True)
    trainer = Trainer(tiny_gpt2(), args, train_dataset=rows, callbacks=[LandscapeCallback(folder + "/run", 1)])
    trainer.train()


def export() -> None:
    import h5py
    import numpy as np
    import trimesh

    from hf_landscape import Surface

    x = y = np.linspace(-1.0, 1.0, 3)
    plane = Surface(x, np.add.outer(y**2, x**2) + 1.0, y=y, metadata={"kind": "plane"})
    folder = tempfile.mkdtemp()
    for suffix in (".glb", ".vtp", ".h5", ".parquet", ".csv"):
        plane.export(f"{folder}/plane{suffix}")
    assert len(trimesh.load(f"{folder}/plane.glb", force="mesh").vertices) == 9, "glb vertices"
    with h5py.File(f"{folder}/plane.h5") as f:
        assert f["train_loss"].shape == (3, 3), "Li et al. layout"
    again = Surface.from_li2018_h5(f"{folder}/plane.h5")
    assert np.array_equal(again.values, plane.values), "h5 round trip"


CHECKS = {"core": core, "data": data, "glue": glue, "lora": lora, "multi-gpu": multi_gpu, "train": train, "export": export}

if __name__ == "__main__":
    name = sys.argv[1]
    CHECKS[name]()
    print(f"extra {name}: ok")
