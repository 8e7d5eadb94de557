"""Data parallelism through the real ``accelerate launch``: two CPU processes (gloo)
train the same model as one process with the same global batch, and emit the same file.

Dropout is off (in the head and in the backbone's config) so the two runs can be
compared: with it on, each process draws its own masks for its own share of a batch.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.errors import DistillError
from distill.train import CHECKPOINT, LOG, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5  # max abs weight difference after 10 steps (measured: ~1e-7, float summation order)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args: list[str], processes: int = 2) -> subprocess.CompletedProcess:
    """``accelerate launch`` as a user types it, with CPU processes (ACCELERATE_USE_CPU=1, gloo)."""
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "distill", *args]
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def backbone_without_dropout(tiny_backbone, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("backbone") / "no-dropout"
    shutil.copytree(tiny_backbone, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _data_args(d: dict) -> list[str]:
    return ["--train", str(d["train"]), "--test", str(d["test"]), "--format", "msra"]


def test_two_cpu_processes_train_and_emit_like_one(tmp_path, backbone_without_dropout, tiny_dataset_kwargs):
    from typer.testing import CliRunner

    from distill.cli import app

    train = ["teacher", "train", "--backbone", str(backbone_without_dropout), "--dropout", "0", "--epochs", "2",
             "--batch-size", "8", "--patience", "5", *_data_args(tiny_dataset_kwargs)]
    _launch([*train, "--out", str(tmp_path / "two")])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the launched processes; thread count changes float summation order
    try:
        result = CliRunner().invoke(app, [*train, "--out", str(tmp_path / "one")])
        assert result.exit_code == 0, result.output
    finally:
        torch.set_num_threads(threads)

    one, two = (load_checkpoint(tmp_path / f"{n}.work" / CHECKPOINT) for n in ("one", "two"))
    assert one["state"]["global_step"] == two["state"]["global_step"] == 10  # 36 sentences / 8, twice
    assert len(two["rng"]) == 2 and two["processes"] == 2  # each process's RNG state is kept
    diff = max((one["model"][k] - two["model"][k]).abs().max().item() for k in one["model"])
    assert diff < TOLERANCE, diff
    logs = [[json.loads(l) for l in (tmp_path / n / LOG).read_text().splitlines()] for n in ("one", "two")]
    assert len(logs[1]) == 2  # written once, by the main process
    for a, b in zip(*logs):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["nll"] == pytest.approx(b["nll"], rel=1e-5)
        assert a["dev_f1"] == b["dev_f1"]
    meta = json.loads((tmp_path / "two" / "distill.json").read_text())
    assert meta["meta"]["training"]["processes"] == 2

    # emission: two processes write the same file as one
    from distill.emissions import Emissions, emit

    model = tmp_path / "two"
    _launch(["teacher", "emit", str(model), "--out", str(tmp_path / "em2"), "--batch-size", "4",
             *_data_args(tiny_dataset_kwargs)])
    torch.set_num_threads(1)
    try:
        emit(model=model, dataset=tiny_dataset_kwargs, out=tmp_path / "em1", batch_size=4, quiet=True)
    finally:
        torch.set_num_threads(threads)
    for name in ("emissions.npy", "offsets.npy"):
        assert (tmp_path / "em1" / name).read_bytes() == (tmp_path / "em2" / name).read_bytes(), name
    m1, m2 = (json.loads((tmp_path / e / "meta.json").read_text()) for e in ("em1", "em2"))
    assert m1 == m2
    em = Emissions(tmp_path / "em2")
    assert len(em) == 36 and np.isfinite(np.asarray(em.data, dtype=np.float32)).all()


def test_a_launch_that_cannot_join_is_refused(monkeypatch):
    """``accelerate launch --multi_gpu`` without GPUs (and without ACCELERATE_USE_CPU) would
    start independent copies writing one folder; each refuses instead."""
    from distill.processes import accelerator, process_state

    monkeypatch.setenv("WORLD_SIZE", "2")
    for make in (accelerator, process_state):
        with pytest.raises(DistillError, match="launched as 2 processes but Accelerate joined 1.*ACCELERATE_USE_CPU=1"):
            make()
