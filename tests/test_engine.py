"""distill/engine.py, on its own: parameter groups and their learning rates, the per-group
schedule by hand, and the loop on a toy regression (no tagger, no tokenizer): Ctrl-C,
resume bit-identical to a straight run, a NaN loss, max_steps, the per-step log."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from distill.engine import Engine, adamw, linear_schedule
from distill.errors import DistillError
from distill.features import bucket_batches
from distill.processes import accelerator

N, BATCH, EPOCHS = 20, 6, 3  # 4 steps an epoch (6, 6, 6, 2 items)
X = torch.randn(N, 4, generator=torch.Generator().manual_seed(1))
Y = X.sum(1)


def test_adamw_groups_learning_rates_and_weight_decay():
    model = torch.nn.ModuleDict({"emb": torch.nn.Embedding(5, 3), "lin": torch.nn.Linear(3, 2),
                                 "frozen": torch.nn.Linear(2, 2)})
    model["frozen"].requires_grad_(False)
    named = [("embeddings", model["emb"].weight), ("head", model["lin"].weight), ("head", model["lin"].bias),
             ("crf", torch.nn.Parameter(torch.zeros(2, 2))),
             ("head", model["frozen"].weight), ("head", model["frozen"].bias)]
    opt = adamw(named, {"embeddings": 1.0, "head": 2.0, "crf": 3.0}, weight_decay=0.1, no_decay=("crf",))
    got = [(g["name"], g["lr"], g["weight_decay"], len(g["params"])) for g in opt.param_groups]
    # in order of first appearance; the bias (1-D) and the no_decay group without decay; frozen ones left out
    assert got == [("embeddings", 1.0, 0.1, 1), ("head", 2.0, 0.1, 1), ("head", 2.0, 0.0, 1), ("crf", 3.0, 0.0, 1)]


def test_linear_schedule_by_hand():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 1.0, "name": "a"}, {"params": [b], "lr": 1.0, "name": "b"}])
    scheduler = linear_schedule(opt, total=10, warmup=0.2, starts={"b": 4})
    seen = []
    for _ in range(11):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        scheduler.step()
    # a: warmup over int(0.2 * 10) = 2 steps, then (10 - step) / (10 - 2)
    assert [s[0] for s in seen] == pytest.approx([1 / 2, 1, 1, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8, 0])
    # b: 0 before step 4, then warmup over int(0.2 * 6) = 1 of its steps, then (10 - step) / (10 - 4 - 1)
    assert [s[1] for s in seen] == pytest.approx([0, 0, 0, 0, 1, 1, 4 / 5, 3 / 5, 2 / 5, 1 / 5, 0])


def _run(out, *, resume=False, interrupt_at=None, nan_at=None, max_steps=None, seed=0):
    """Train a small MLP with dropout (so a resume must restore the random generators) on
    ``Y = sum(X)``; returns the engine and the model."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 1))
    optimizer = adamw(((("encoder" if n.startswith("0.") else "head"), p) for n, p in model.named_parameters()),
                      {"encoder": 1e-2, "head": 3e-2}, weight_decay=0.01)
    calls = [0]

    def loss(net, batch):
        calls[0] += 1
        if calls[0] == interrupt_at:  # Ctrl-C during this step: it finishes, then the run stops
            signal.raise_signal(signal.SIGINT)
        value = ((net(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean()
        if calls[0] == nan_at:
            value = value * float("nan")
        return value, {"mse": value.item()}

    engine = Engine(model, optimizer, linear_schedule(optimizer, 4 * EPOCHS, 0.1), acc=accelerator(), out=out,
                    log="log.jsonl", make_batch=lambda idx, step: {"x": X[list(idx)], "y": Y[list(idx)]}, loss=loss,
                    units=[1] * N, clip=1.0, checkpoint_every=5, max_steps=max_steps, identity={"seed": seed},
                    log_by="step")
    engine.start(resume, lambda ckpt: None if ckpt["seed"] == seed else f"made with seed {ckpt['seed']}")
    with engine.running(quiet=True):
        while engine.state["epoch"] < EPOCHS and not engine.at_max_steps():
            engine.run_epoch(bucket_batches([1] * N, BATCH, seed=engine.state["epoch"]), "epoch")
    engine.finish()
    return engine, model


def _log(engine) -> list[dict]:
    return [json.loads(line) for line in engine.log_path.read_text(encoding="utf-8").splitlines()]


def test_resume_after_ctrl_c_is_bit_identical(tmp_path):
    straight, model = _run(tmp_path / "straight")
    assert straight.state["global_step"] == 12 and straight.state["epoch"] == 3 and straight.done()
    assert [r["step"] for r in _log(straight)] == list(range(1, 13))

    with pytest.raises(DistillError, match=r"interrupted \(SIGINT\) at epoch 2, step 2; checkpoint saved to "
                                           r".*cut\.work/checkpoint\.pt; run the same command with --resume"):
        _run(tmp_path / "cut", interrupt_at=6)
    resumed, again = _run(tmp_path / "cut", resume=True)
    assert resumed.state["global_step"] == 12
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert _log(resumed) == _log(straight)  # steps 1-6 before the stop, 7-12 after it


def test_nan_loss_stops_before_its_step_and_max_steps_ends_mid_epoch(tmp_path):
    with pytest.raises(DistillError, match=r"loss is nan at epoch 1, step 3 \(global step 3\)"):
        _run(tmp_path / "nan", nan_at=3)
    log = tmp_path / "nan.work" / "log.jsonl"
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]  # no step on the bad loss

    engine, _ = _run(tmp_path / "short", max_steps=6)
    assert engine.state["global_step"] == 6 and engine.state["epoch"] == 2 and engine.done() and len(_log(engine)) == 6
    with pytest.raises(DistillError, match=r"short\.work/checkpoint\.pt: made with seed 0$"):
        _run(tmp_path / "short", resume=True, seed=1)
