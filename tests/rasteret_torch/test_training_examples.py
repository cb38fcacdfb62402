"""The training examples and the LightningCLI config run end to end on the embedded
demo world (small step counts; `make demo` runs the full job)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

pytest.importorskip("lightning")

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.torch


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_plain_pytorch_loop():
    out = run("training_examples/plain_pytorch.py", "--steps", "4", "--batch-size", "8")
    assert "samples/s" in out.stdout and "loss" in out.stdout


def test_lightning_segmentation_task():
    # In-process loading: worker processes are run end to end by the plain loop above
    # (and tests/rasteret_torch/test_torch.py); here they would only add their start-up.
    out = run("training_examples/lightning_segmentation.py", "--steps", "3", "--batch-size", "4",
              "--workers", "0")
    assert "train_loss" in out.stdout


def test_ddp_on_two_cpu_processes():
    out = run("training_examples/ddp_gloo.py", "--steps", "2", "--batch-size", "4")
    assert "world size 2" in out.stdout


def test_lightning_cli_config(tmp_path):
    import rasteret
    from testbed.scenes import write_scenes

    scenes = write_scenes(tmp_path / "data", count=2, size=512, tile=256, days_between=60)
    rows = [{"id": s.id, "datetime": s.datetime, **{b: str(p) for b, p in s.files.items()}}
            for s in scenes]
    rasteret.build_from_table(pa.Table.from_pylist(rows), name="sentinel2-demo",
                              href_columns=["B02", "B03", "B04", "B08", "label"],
                              workspace_dir=tmp_path / "ws", progress=False)
    run("training_examples/cli.py", "fit", "--config", "configs/segmentation.yaml",
        "--data.workspace_dir", str(tmp_path / "ws"), "--trainer.max_steps", "2",
        "--data.length", "8", "--data.batch_size", "4", "--trainer.limit_val_batches", "1",
        "--data.num_workers", "0",
        "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
        "--trainer.default_root_dir", str(tmp_path / "runs"))
