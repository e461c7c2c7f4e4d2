"""Where `hf-landscape demo`'s time goes: wall and CPU time of each stage (imports, loading the GGUF model and its
tokenizer, the first loss, drawing the directions, the plane, the line, saving and plots), the same calls as the
demo with its defaults. CPU time is the steadier figure on a shared machine; with `--threads 1` it is the work.

    python benchmarks/demo_stages.py [--threads 1] [--out /tmp/demo_stages]
"""

from __future__ import annotations

import argparse
import tempfile
import time

T0, C0 = time.perf_counter(), time.process_time()
STAGES: list[tuple[str, float, float]] = []


def mark(stage: str) -> None:
    global T0, C0
    t, c = time.perf_counter(), time.process_time()
    STAGES.append((stage, t - T0, c - C0))
    T0, C0 = t, c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=None, help="folder for the surfaces and plots (default: a temporary one)")
    args = parser.parse_args()
    import torch
    from transformers import AutoTokenizer

    from hf_landscape import CausalLMObjective, LandscapeProbe
    from hf_landscape.cli.demo import DEMO_GGUF, demo_model_folder, demo_text
    from hf_landscape.hub import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or tempfile.mkdtemp(prefix="demo_stages_")
    mark("imports")
    folder = demo_model_folder()
    model, provenance = load_model(folder, gguf_file=DEMO_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=DEMO_GGUF)
    mark("loading the model and tokenizer")
    objective = CausalLMObjective.from_long_text(demo_text(), tokenizer, max_length=48, batch_size=8)
    probe = LandscapeProbe(model, objective, progress=False, provenance=provenance)
    probe.loss()
    mark("first loss")
    directions = probe.directions(0, axes=2)
    mark("directions")
    plane = probe.plane(steps=(7, 7), span=(-0.2, 0.2), directions=directions)
    mark("plane (49 points)")
    line = probe.line(steps=13, span=(-0.2, 0.2), direction=directions[0])
    mark("line (13 points)")
    for name, surface in (("plane", plane), ("line", line)):
        surface.save_pretrained(f"{out}/{name}", overwrite=True)
        surface.save_plots(f"{out}/{name}")
    mark("saving and plots")
    print(f"torch threads: {torch.get_num_threads()}, tokens: {objective.num_tokens}")
    print(f"{'stage':34s} {'wall s':>8s} {'CPU s':>8s}")
    for stage, wall, cpu in STAGES:
        print(f"{stage:34s} {wall:8.1f} {cpu:8.1f}")
    print(f"{'total':34s} {sum(s[1] for s in STAGES):8.1f} {sum(s[2] for s in STAGES):8.1f}")


if __name__ == "__main__":
    main()
