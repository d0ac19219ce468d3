"""DistributedDataParallel: two CPU processes (gloo, launched by torchrun) match one process."""

import subprocess
import sys

import pytest
import torch
from tiny_runs import tiny

from equilibria.training import load_checkpoint

# no augmentation, dropout or Jacobian-penalty probes (their random draws differ per process by
# design) and tolerance 0 (every solve runs its full cap), so each sample's computation is the
# same in both runs
SETTINGS = tiny(
    "optim.epochs=1",
    "data.train_samples=64",
    "data.batch_size=32",
    "data.shift=0",
    "model.dropout=0",
    "deq.tol=0",
    "deq.jacobian_gamma=0",
    "optim.optimizer=sgd",
    "optim.lr=0.05",
    "run.sweep=1",
    "run.trace_iters=2",
    "run.threads=1",
)


def run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.slow
def test_two_processes_train_like_one_on_the_same_global_batch(tmp_path):
    run([sys.executable, "-m", "equilibria", "train", "--out", str(tmp_path / "one"), *SETTINGS])
    two = run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "equilibria",
            "train",
            "--out",
            str(tmp_path / "two"),
            *SETTINGS,
        ]
    )
    assert two.stdout.count("epoch 1/1") == 1  # only rank 0 logs
    assert "2 processes on cpu" in two.stdout
    one = load_checkpoint(tmp_path / "one")
    both = load_checkpoint(tmp_path / "two")
    assert both["world_size"] == 2 and both["progress"].global_step == 2
    for name, value in one["model"].items():
        torch.testing.assert_close(both["model"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    first, second = one["history"][0], both["history"][0]
    assert abs(first["train_loss"] - second["train_loss"]) < 1e-5
    assert first["test_accuracy"] == second["test_accuracy"]
