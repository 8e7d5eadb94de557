"""The training loop: config checks, NaN stops, JSON-clean summaries, checkpoints and
what --resume accepts and refuses."""

from __future__ import annotations

import json
import math

import pytest
import torch

from distill.data import load_dataset
from distill.errors import DistillError
from distill.train import CHECKPOINT, LOG, SUMMARY, TrainConfig, default_loss, load_checkpoint, train
from test_checkpoint import DAMAGES, spoil


@pytest.fixture(scope="module")
def tiny_ds(tiny_dataset_kwargs):
    return load_dataset(**tiny_dataset_kwargs)


@pytest.fixture
def make_model(tiny_backbone, tiny_ds):
    """A fresh tiny BERT-CRF teacher (same weights every call)."""
    from teachers.bert_crf import build_teacher

    def make(dropout: float = 0.1, head: str = "crf"):
        torch.manual_seed(0)
        return build_teacher(tiny_ds.labels, tiny_ds.train.tokens, backbone=str(tiny_backbone), dropout=dropout, head=head,
                             meta={"role": "teacher", "char_level": True, "scheme": "BMES", "separator": "-"})
    return make


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=8, lr=1e-3, embedding_lr=1e-3, head_lr=1e-2, checkpoint_minutes=0)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("bad", [dict(checkpoint_every=-1), dict(max_steps=0), dict(patience=0), dict(clip=-1.0),
                                 dict(embedding_lr=0.0), dict(checkpoint_minutes=-1.0), dict(batch_size=0)])
def test_config_refuses_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig(**bad)


def test_nan_loss_stops_with_the_step(make_model, tiny_ds, tmp_path):
    calls = []

    def nan_at_3(model, out, batch):
        loss, parts = default_loss(model, out, batch)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 3 else loss), parts

    with pytest.raises(DistillError, match=r"loss is nan at epoch 1, step 3 \(global step 3\)"):
        train(make_model(), tiny_ds.train, tiny_ds.dev, tmp_path / "m", cfg(), loss_fn=nan_at_3, quiet=True)
    assert len(calls) == 3  # stopped at once: no optimizer step on the bad loss, no more batches
    assert not (tmp_path / "m").exists()  # no model folder from a run that never finished an epoch


def test_inf_loss_stops_too(make_model, tiny_ds, tmp_path):
    def inf(model, out, batch):
        loss, parts = default_loss(model, out, batch)
        return loss + float("inf"), parts

    with pytest.raises(DistillError, match=r"loss is inf at epoch 1, step 1 \(global step 1\)"):
        train(make_model(), tiny_ds.train, tiny_ds.dev, tmp_path / "m", cfg(), loss_fn=inf, quiet=True)


def test_summary_and_state_are_json_clean(make_model, tiny_ds, tmp_path):
    summary = train(make_model(), tiny_ds.train, tiny_ds.dev, tmp_path / "m", cfg(), quiet=True)
    assert type(summary["best_f1"]) is float and type(summary["global_step"]) is int
    assert json.loads(json.dumps(summary)) == summary  # plain types only, no default=str needed
    work = tmp_path / "m.work"
    assert json.loads((work / SUMMARY).read_text()) == summary
    assert summary["done"] and summary["epoch"] == 2 and summary["global_step"] == 2 * math.ceil(36 / 8)
    meta = json.loads((tmp_path / "m" / "distill.json").read_text())
    assert type(meta["meta"]["training"]["best_dev_f1"]) is float
    # the log holds the loss parts, and the model folder carries the same full log
    records = [json.loads(l) for l in (work / LOG).read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(r["nll"] == pytest.approx(r["loss"]) for r in records)
    assert (tmp_path / "m" / LOG).read_text() == (work / LOG).read_text()


def test_checkpoint_every_writes_mid_epoch_checkpoints(make_model, tiny_ds, tmp_path):
    seen = []

    def spy(model, out, batch):  # the checkpoint of step k exists before step k + 1 runs
        path = tmp_path / "m.work" / CHECKPOINT
        seen.append(load_checkpoint(path)["state"]["global_step"] if path.exists() else None)
        return default_loss(model, out, batch)

    train(make_model(), tiny_ds.train, tiny_ds.dev, tmp_path / "m", cfg(epochs=1, checkpoint_every=2), loss_fn=spy,
          quiet=True)
    assert seen == [None, None, 2, 2, 4]
    ckpt = load_checkpoint(tmp_path / "m.work" / CHECKPOINT)  # loads with weights_only=True
    assert ckpt["state"]["done"] and ckpt["config"]["checkpoint_every"] == 2 and len(ckpt["rng"]) == 1


def test_resume_refuses_what_does_not_fit(make_model, tiny_ds, tmp_path):
    out = tmp_path / "m"
    with pytest.raises(DistillError, match=r"m\.work/checkpoint\.pt: no checkpoint to resume from"):
        train(make_model(), tiny_ds.train, tiny_ds.dev, out, cfg(), resume=True, quiet=True)
    train(make_model(), tiny_ds.train, tiny_ds.dev, out, cfg(max_steps=1), quiet=True)
    with pytest.raises(DistillError, match=r"checkpoint\.pt: made with other settings \(batch_size 8 -> 4\)"):
        train(make_model(), tiny_ds.train, tiny_ds.dev, out, cfg(max_steps=2, batch_size=4), resume=True, quiet=True)
    other = tiny_ds.train.subset(range(10))
    with pytest.raises(DistillError, match="made for other training data"):
        train(make_model(), other, tiny_ds.dev, out, cfg(max_steps=2), resume=True, quiet=True)
    with pytest.raises(DistillError, match="does not fit this model"):
        train(make_model(head="softmax"), tiny_ds.train, tiny_ds.dev, out, cfg(max_steps=2), resume=True, quiet=True)
    # a finished run resumes to its summary at once
    again = train(make_model(), tiny_ds.train, tiny_ds.dev, out, cfg(max_steps=1), resume=True, quiet=True)
    assert again["done"] and again["global_step"] == 1


@pytest.mark.parametrize("damage", DAMAGES)
def test_corrupt_checkpoint_is_refused_by_name(make_model, tiny_ds, tmp_path, damage):
    out = tmp_path / "m"
    train(make_model(), tiny_ds.train, tiny_ds.dev, out, cfg(max_steps=1), quiet=True)
    path = out.with_name("m.work") / CHECKPOINT
    spoil(path, damage, {"weights": torch.zeros(2)})
    with pytest.raises(DistillError, match=rf"{path}: (corrupt checkpoint|not a distill checkpoint).*delete it"):
        train(make_model(), tiny_ds.train, tiny_ds.dev, out, cfg(max_steps=2), resume=True, quiet=True)


def test_new_run_removes_stale_temporary_files(make_model, tiny_ds, tmp_path):
    out = tmp_path / "m"
    work = tmp_path / "m.work"
    work.mkdir()
    (work / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".m.xyz.tmp").mkdir()  # a model folder whose atomic save was killed
    (tmp_path / ".other.xyz.tmp").mkdir()  # someone else's: left alone
    train(make_model(), tiny_ds.train, tiny_ds.dev, out, cfg(max_steps=1), quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.xyz.tmp", "m", "m.work"]
    assert not list(work.glob(".*.tmp"))


def test_batches_are_bucketed_by_what_the_model_pads(make_model, tiny_ds, tmp_path, monkeypatch):
    """A BERT model pads sub-tokens, not words: the epoch's batches are bucketed by them."""
    import distill.train as dt
    from distill.features import make_pieces

    seen = []
    real = dt.bucket_batches

    def spy(lengths, *args, **kwargs):
        seen.append(list(lengths))
        return real(lengths, *args, **kwargs)

    monkeypatch.setattr(dt, "bucket_batches", spy)
    model = make_model()
    train(model, tiny_ds.train, tiny_ds.dev, tmp_path / "m", cfg(max_steps=1), quiet=True)
    pieces = make_pieces(model, tiny_ds.train.tokens)
    assert seen[0] == [len(p.feature["input_ids"]) for p in pieces]  # sub-tokens with [CLS] and [SEP]
    assert seen[0] != [p.n_words for p in pieces]
