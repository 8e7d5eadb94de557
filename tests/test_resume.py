"""Faults: a run killed with SIGKILL (mid-epoch, or while writing its checkpoint) and
resumed ends bit-identical to an uninterrupted run; Ctrl-C stops, checkpoints and says
how to resume; partial or corrupt files are refused with one line naming the file."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.errors import DistillError
from distill.train import CHECKPOINT, LOG, TrainConfig, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# 36 train sentences, batch 8: 5 steps per epoch. Checkpoints every 3 steps and at each epoch end.
CONFIG = dict(epochs=3, batch_size=8, lr=1e-3, embedding_lr=1e-3, head_lr=1e-2, checkpoint_minutes=0,
              checkpoint_every=3, patience=10)

# Trains a tiny teacher in a child process that SIGKILLs itself at a chosen point:
# "loss N" while computing the loss of step N, "save N" halfway through writing its N-th checkpoint.
CHILD = r"""
import functools, json, os, signal, sys
import torch
torch.set_num_threads(int(sys.argv[4]))
import distill.train as dt
import teachers.train as tt

where, n = sys.argv[3].split()
n = int(n)
calls = [0]

def loss_fn(model, out, batch):
    calls[0] += 1
    if where == "loss" and calls[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return dt.default_loss(model, out, batch)

real_save = torch.save
saves = [0]

def dying_save(obj, f):
    saves[0] += 1
    real_save(obj, f)
    if where == "save" and saves[0] == n:
        data = open(f, "rb").read()
        open(f, "wb").write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

torch.save = dying_save
tt.train = functools.partial(dt.train, loss_fn=loss_fn)
args = json.loads(sys.argv[2])
tt.train_teacher(out=sys.argv[1], dataset=args["dataset"], config=tt.TeacherConfig(backbone=args["backbone"]),
                 train_config=dt.TrainConfig(**args["config"]), quiet=True)
"""


def _dataset(kwargs) -> dict:
    return {k: str(v) for k, v in kwargs.items()}


def _train_in_process(out, tiny_backbone, tiny_dataset_kwargs, resume=False) -> dict:
    from teachers.train import TeacherConfig, train_teacher

    return train_teacher(out=out, dataset=_dataset(tiny_dataset_kwargs),
                         config=TeacherConfig(backbone=str(tiny_backbone)),
                         train_config=TrainConfig(**CONFIG), resume=resume, quiet=True)


def _run_and_kill(out, tiny_backbone, tiny_dataset_kwargs, where: str) -> subprocess.CompletedProcess:
    args = json.dumps({"dataset": _dataset(tiny_dataset_kwargs), "backbone": str(tiny_backbone), "config": CONFIG})
    proc = subprocess.run([sys.executable, "-c", CHILD, str(out), args, where, str(torch.get_num_threads())],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    return proc


def _work(out: Path) -> Path:
    return out.with_name(out.name + ".work")


def assert_same_run(a: Path, b: Path) -> None:
    """Same final weights and optimizer state, same best model bytes, same log (but seconds)."""
    ca, cb = load_checkpoint(_work(a) / CHECKPOINT), load_checkpoint(_work(b) / CHECKPOINT)
    assert ca["state"]["done"] and cb["state"]["done"]
    assert ca["model"].keys() == cb["model"].keys()
    different = [k for k in ca["model"] if not torch.equal(ca["model"][k], cb["model"][k])]
    assert not different, different
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()

    def log(folder):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (folder / LOG).read_text().splitlines()]
    assert log(a) == log(b) and len(log(a)) == CONFIG["epochs"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_backbone, tiny_dataset_kwargs) -> Path:
    out = tmp_path_factory.mktemp("reference") / "model"
    _train_in_process(out, tiny_backbone, tiny_dataset_kwargs)
    return out


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, reference, tiny_backbone, tiny_dataset_kwargs):
    out = tmp_path / "model"
    _run_and_kill(out, tiny_backbone, tiny_dataset_kwargs, "loss 8")  # killed in step 8 = epoch 2, step 3
    ckpt = load_checkpoint(_work(out) / CHECKPOINT)
    # the last checkpoint is step 6: one step into epoch 2, with that step's loss already summed
    assert ckpt["state"]["global_step"] == 6 and ckpt["state"]["epoch"] == 1 and ckpt["state"]["step_in_epoch"] == 1
    assert ckpt["state"]["epoch_sums"]["n"] == 1 and not ckpt["state"].get("done")
    summary = _train_in_process(out, tiny_backbone, tiny_dataset_kwargs, resume=True)
    assert summary["global_step"] == 15
    assert summary["best_f1"] == json.loads((_work(reference) / "summary.json").read_text())["best_f1"]
    assert_same_run(out, reference)


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, reference, tiny_backbone,
                                                                   tiny_dataset_kwargs):
    out = tmp_path / "model"
    # checkpoints: step 3, step 5 (end of epoch 1), step 6 <- killed halfway through writing this one
    _run_and_kill(out, tiny_backbone, tiny_dataset_kwargs, "save 3")
    stale = list(_work(out).glob(".checkpoint.pt.*.tmp"))
    assert len(stale) == 1  # the half-written file never took the checkpoint's name
    ckpt = load_checkpoint(_work(out) / CHECKPOINT)
    assert ckpt["state"]["global_step"] == 5 and ckpt["state"]["epoch"] == 1 and ckpt["state"]["step_in_epoch"] == 0
    _train_in_process(out, tiny_backbone, tiny_dataset_kwargs, resume=True)
    assert not stale[0].exists()
    assert_same_run(out, reference)


def test_ctrl_c_stops_saves_and_says_how_to_resume(tmp_path, tiny_backbone, tiny_dataset_kwargs):
    out = tmp_path / "model"
    d = tiny_dataset_kwargs
    cmd = [sys.executable, "-m", "distill", "teacher", "train", "--out", str(out), "--backbone", str(tiny_backbone),
           "--train", str(d["train"]), "--test", str(d["test"]), "--format", "msra", "--batch-size", "8",
           "--epochs", "1000", "--patience", "1000"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        for line in proc.stderr:  # the loop is running once epoch 1 is reported
            lines.append(line)
            if line.startswith("epoch 1:"):
                break
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=300)
    finally:
        proc.kill()
    err = "".join(lines) + rest
    assert proc.returncode == 1, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    ckpt_path = _work(out) / CHECKPOINT
    assert re.fullmatch(rf"error: interrupted \(SIGINT\) at epoch \d+, step \d+; checkpoint saved to "
                        rf"{re.escape(str(ckpt_path))}; run the same command with --resume to continue", last), last
    state = load_checkpoint(ckpt_path)["state"]
    assert state["epoch"] >= 1 and not state.get("done")
    assert (out / "distill.json").exists()  # the best epoch so far is a complete model folder

    # --resume continues from there (two more steps, then stop)
    from teachers.train import TeacherConfig, train_teacher

    cfg = TrainConfig(epochs=1000, batch_size=8, lr=1e-4, embedding_lr=2e-3, head_lr=1e-3, patience=1000,
                      max_steps=state["global_step"] + 2)
    summary = train_teacher(out=out, dataset=_dataset(d), config=TeacherConfig(backbone=str(tiny_backbone)),
                            train_config=cfg, resume=True, quiet=True)
    assert summary["global_step"] == state["global_step"] + 2 and summary["done"]


# ---------------------------------------------------------------------------
# Partial and corrupt files


@pytest.fixture
def teacher_copy(tiny_teacher, tmp_path) -> Path:
    dst = tmp_path / "teacher"
    shutil.copytree(tiny_teacher, dst)
    return dst


def _one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(DistillError) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json", "distill.json"])
def test_model_folder_missing_a_file_is_refused_by_name(teacher_copy, name):
    from distill.modeling import load_model

    (teacher_copy / name).unlink()
    msg = _one_line_error(load_model, teacher_copy)
    assert msg.startswith(str(teacher_copy)) and name in msg


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json", "distill.json"])
def test_model_folder_with_a_truncated_file_is_refused(teacher_copy, name):
    from distill.modeling import load_model

    path = teacher_copy / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    msg = _one_line_error(load_model, teacher_copy)
    assert str(teacher_copy) in msg


def test_model_save_is_all_or_nothing(teacher_copy, monkeypatch):
    from distill.modeling import load_model

    model = load_model(teacher_copy)
    before = {p.name: p.read_bytes() for p in teacher_copy.iterdir() if p.is_file()}

    def fail(folder):
        raise OSError("disk full")
    monkeypatch.setattr(model, "save_extra", fail)
    with pytest.raises(OSError):
        model.save(teacher_copy)
    assert {p.name: p.read_bytes() for p in teacher_copy.iterdir() if p.is_file()} == before  # the old folder, untouched
    assert [p.name for p in teacher_copy.parent.iterdir() if p.name.startswith(".")] == []


@pytest.fixture
def emissions_dir(tiny_teacher, tiny_dataset_kwargs, tmp_path) -> Path:
    from distill.emissions import emit

    return emit(model=tiny_teacher, dataset=tiny_dataset_kwargs, out=tmp_path / "em", quiet=True)


def _damage_offsets(folder: Path):
    offsets = np.load(folder / "offsets.npy")
    np.save(folder / "offsets.npy", offsets[:-1])


def _damage_data(folder: Path):
    path = folder / "emissions.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size - 64])


def _damage_meta_words(folder: Path):
    meta = json.loads((folder / "meta.json").read_text())
    meta["words"] += 1
    (folder / "meta.json").write_text(json.dumps(meta))


def _damage_meta_json(folder: Path):
    path = folder / "meta.json"
    path.write_text(path.read_text()[:50])


def _remove_offsets(folder: Path):
    (folder / "offsets.npy").unlink()


def _remove_meta(folder: Path):
    (folder / "meta.json").unlink()


@pytest.mark.parametrize("damage", [_damage_offsets, _damage_data, _damage_meta_words, _damage_meta_json,
                                    _remove_offsets, _remove_meta])
def test_damaged_emissions_are_refused(emissions_dir, damage, tiny_dataset_kwargs):
    from distill.data import load_dataset
    from distill.emissions import Emissions

    ds = load_dataset(**tiny_dataset_kwargs)
    Emissions(emissions_dir).check(ds.train, ds.labels)  # whole: accepted
    damage(emissions_dir)
    msg = _one_line_error(Emissions, emissions_dir)
    assert str(emissions_dir) in msg and ("emit" in msg)


def test_emissions_write_is_all_or_nothing(tiny_teacher, tiny_dataset_kwargs, tmp_path, monkeypatch):
    from distill import emissions

    def fail(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(emissions, "write_json", fail)  # the last part written
    with pytest.raises(OSError):
        emissions.emit(model=tiny_teacher, dataset=tiny_dataset_kwargs, out=tmp_path / "em", quiet=True)
    assert list(tmp_path.iterdir()) == []
