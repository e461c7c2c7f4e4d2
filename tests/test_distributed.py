"""Grid points sharded over processes (torchrun / accelerate launch) give the single-process surface."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hf_landscape import ConfigError, LandscapeProbe

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import numpy as np, torch
    torch.set_num_threads(1)
    from test_checkpoint import make_probe
    from hf_landscape.engine import distributed_state
    probe = make_probe()
    state = distributed_state()
    assert state is not None and state.num_processes == 2
    plane = probe.plane(steps=(5, 3), seed=3, checkpoint_dir={ckpt!r})
    np.save({out!r} + f"/rank{{state.process_index}}.npy", plane.values)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_every_rank_the_single_process_surface(tmp_path):
    from test_checkpoint import make_probe

    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path), ckpt=str(tmp_path / "ck")))
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    result = subprocess.run([*cmd, str(script)], env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    reference = make_probe().plane(steps=(5, 3), seed=3).values
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(tmp_path / f"rank{rank}.npy"), reference)


def test_distributed_true_outside_a_launcher_is_a_config_error(monkeypatch):
    from test_checkpoint import make_probe

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    probe = make_probe()
    with pytest.raises(ConfigError, match="accelerate launch"):
        LandscapeProbe(probe.model, probe.objective, distributed=True)
