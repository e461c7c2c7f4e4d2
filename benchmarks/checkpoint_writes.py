"""Cost of one partial-grid checkpoint, durable (`fsync` of both files and the folder) and not.

A grid saves its points every `checkpoint_every` points without `fsync` (the rename is atomic, so a killed process
loses nothing saved), and durably when it stops and when it is complete (`hf_landscape.engine.checkpoint`). This prints
the milliseconds of one save of a 441-point (21 x 21) partial grid each way, in the folder given (the disk
matters: run it where your outputs go), alternating the two kinds and keeping the minimum mean over rounds.

    python benchmarks/checkpoint_writes.py [--folder .] [--saves 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import numpy as np

from hf_landscape.engine.checkpoint import GridCheckpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", default=".", help="a folder on the disk to measure")
    parser.add_argument("--saves", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix=".checkpoint_writes.", dir=args.folder)
    try:
        checkpoint = GridCheckpoint(folder, {"kind": "plane", "axes": [list(range(21))] * 2})
        values, done = np.random.default_rng(0).normal(size=441), np.ones(441, dtype=bool)
        best = {True: float("inf"), False: float("inf")}
        for _ in range(args.rounds):
            for durable in (True, False):
                start = time.perf_counter()
                for _ in range(args.saves):
                    checkpoint.save(values, done, {}, durable=durable)
                best[durable] = min(best[durable], (time.perf_counter() - start) / args.saves)
        print(f"durable save: {best[True] * 1e3:.2f} ms   periodic save (no fsync): {best[False] * 1e3:.2f} ms")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
