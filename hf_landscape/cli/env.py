"""`hf-landscape env`: what a bug report needs (versions, devices, Hub settings)."""

from __future__ import annotations

import argparse
import json
import platform
from typing import Any

# The packages of the optional features, by what they serve (None in the output: not installed).
OPTIONAL = (
    "datasets",  # evaluation data
    "evaluate",  # GLUE and classification metrics
    "peft",  # adapters, `--directions adapter`
    "accelerate",  # several processes, device maps
    "gguf",  # GGUF checkpoints (the demo)
    "matplotlib",  # plots
    "plotly",  # the interactive viewer
    "pyarrow",  # parquet export
)


def env_command_parser(subparsers: Any) -> argparse.ArgumentParser:
    return subparsers.add_parser("env", help="print versions and devices for bug reports")


def env_command(args: argparse.Namespace) -> int:
    import os
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from ..provenance import library_versions

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        **library_versions(),
        **{name: installed(name) for name in OPTIONAL},
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_threads": torch.get_num_threads(),
        "HF_ENDPOINT": os.environ.get("HF_ENDPOINT"),
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE"),
    }
    print(json.dumps(info, indent=2))
    return 0
