"""distill/checkpoint.py: a checkpoint round trip restores every random generator, damaged
files and other runs' checkpoints are refused in one line naming the file, the log is
trimmed to what the checkpoint covers, and the stop flag turns Ctrl-C into a request."""

from __future__ import annotations

import json
import random
import signal
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from distill import checkpoint
from distill.errors import DistillError

ONE_PROCESS = SimpleNamespace(is_main_process=True, num_processes=1)


def _draws() -> list:
    return [random.random(), float(np.random.rand()), torch.rand(1).item()]


@pytest.fixture
def saved(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    path = tmp_path / "run.work" / checkpoint.CHECKPOINT
    checkpoint.save(path, model=model, optimizer=optimizer, scheduler=scheduler,
                    state={"global_step": 3, "best_f1": np.float64(0.5)}, extra={"data": "abc"})
    return path, model


def test_round_trip_restores_the_random_generators_and_plain_state(saved):
    path, model = saved
    ckpt = checkpoint.load(path)  # weights_only=True: everything in it is tensors and plain types
    checkpoint.set_rng_state(ckpt["rng"][0])
    expected = _draws()
    _draws()
    checkpoint.set_rng_state(ckpt["rng"][0])
    assert _draws() == expected
    assert ckpt["state"] == {"global_step": 3, "best_f1": 0.5} and type(ckpt["state"]["best_f1"]) is float
    assert ckpt["data"] == "abc" and ckpt["format"] == checkpoint.FORMAT
    assert all(torch.equal(ckpt["model"][k], v) for k, v in model.state_dict().items())
    assert list(path.parent.glob(".*.tmp")) == []  # written atomically: nothing left beside it


DAMAGES = ["truncate", "garbage", "empty", "foreign"]


def spoil(path, damage: str, foreign: object) -> None:
    """Damage the checkpoint file ``path`` one of :data:`DAMAGES` ways ("foreign": ``foreign`` saved instead)."""
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00\xff" * 100)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        torch.save(foreign, path)


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_or_foreign_files_are_refused_in_one_line(saved, damage):
    path, _ = saved
    spoil(path, damage, {"model": {}, "state": {}})
    with pytest.raises(DistillError) as e:
        checkpoint.load(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and msg.endswith("delete it to start over") and "\n" not in msg
    if damage == "foreign":
        assert "missing optimizer, scheduler, rng" in msg


def test_read_for_resume_refuses_a_missing_file_and_another_run(saved):
    path, _ = saved
    missing = path.with_name("other.pt")
    with pytest.raises(DistillError, match=f"^{missing}: no checkpoint to resume from; run without --resume"):
        checkpoint.read_for_resume(missing, ONE_PROCESS, lambda ckpt: None)
    with pytest.raises(DistillError, match=f"^{path}: made for other data$"):
        checkpoint.read_for_resume(path, ONE_PROCESS, lambda ckpt: None if ckpt["data"] == "x" else
                                   "made for other data")
    assert checkpoint.read_for_resume(path, ONE_PROCESS, lambda ckpt: None)["data"] == "abc"


def test_trim_log_keeps_the_records_the_checkpoint_covers(tmp_path):
    log = tmp_path / "log.jsonl"
    records = [{"step": s, "loss": 1.0 / s} for s in range(1, 6)]
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 6, "lo', encoding="utf-8")
    checkpoint.trim_log(log, "step", 3)
    assert [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] == records[:3]
    checkpoint.trim_log(log, "step", 10)  # a line cut short by a kill is gone; the rest stays
    assert len(log.read_text(encoding="utf-8").splitlines()) == 3
    checkpoint.trim_log(tmp_path / "none.jsonl", "step", 1)  # no log yet: nothing to do
    assert not (tmp_path / "none.jsonl").exists()


def test_stop_flag_asks_first_and_stops_at_the_second_ctrl_c():
    before = signal.getsignal(signal.SIGINT)
    with checkpoint.StopFlag() as flag:
        assert flag.stop is None
        signal.raise_signal(signal.SIGINT)
        assert flag.stop == "SIGINT"  # a request: the loop checkpoints and stops at its next batch
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
