"""Seeded tiny runs through the training engine, printed as hashes, so a change to the loop
can show it changed no number: a BERT-CRF teacher, a BiLSTM-CRF student distilled from it
over a transfer set, a BERT text classifier and an MLM adaptation of the backbone, each on
tiny models built here (a 2-layer, hidden-32 BERT; the tiny corpora of tests/resources).

    python benchmarks/engine_equivalence.py [--out FILE]

One JSON line per run: the sha256 of each weights file it wrote and of its log with the
timings removed, then the log's values. Run it before and after a change and diff the
output (``--out`` writes the same lines to FILE). One thread, so the float summation
order is the same on every machine load; about ten seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ["DISTILL_CACHE"] = "off"  # featurize every time: a cached piece would hide a change there
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(ROOT / "tests"))

from conftest import RESOURCES, make_tiny_backbone  # noqa: E402  (the tests' tiny backbone, one definition)

TIMINGS = ("seconds",)
CLASSES = ["neg", "pos"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def log_values(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS}
            for line in path.read_text(encoding="utf-8").splitlines() if line]


def record(name: str, folder: Path, weights: tuple[str, ...], log: str) -> dict:
    values = log_values(folder / log)
    return {"run": name, **{f"{w} sha256": sha256(folder / w) for w in weights},
            "log sha256": hashlib.sha256(json.dumps(values).encode()).hexdigest(), "log": values}


def toy_texts(n: int, seed: int, name: str):
    """Separable texts: "pos" uses letters a-l, "neg" m-x (as tests/test_classify.py)."""
    from distill.textdata import TextCorpus

    rng = random.Random(seed)
    texts = [" ".join(rng.choice("abcdefghijkl" if i % 2 else "mnopqrstuvwx") for _ in range(rng.randint(3, 8)))
             for i in range(n)]
    return TextCorpus(name, texts, [CLASSES[i % 2] for i in range(n)])


def runs(work: Path) -> list[dict]:
    import torch

    from distill.classify import train_classifier
    from distill.config import TransferConfig
    from distill.data import read_msra, unlabelled_train
    from distill.kd import KDConfig
    from distill.textdata import TextDataset
    from distill.train import TrainConfig
    from students.train import BiLSTMCRFConfig, default_train_config, train_student
    from teachers.adapt import adapt_backbone
    from teachers.bert_classifier import BertClassifier
    from teachers.train import TeacherConfig, train_teacher

    train_file = RESOURCES / "msra_train.txt"
    chars = sorted({c for s in read_msra(train_file).tokens for c in s})
    backbone = make_tiny_backbone(work / "backbone", "".join(chars[::2]))
    data = {"train": str(train_file), "test": str(RESOURCES / "msra_test.txt"), "fmt": "msra"}
    tagger_cfg = dict(epochs=2, batch_size=8, lr=1e-3, embedding_lr=1e-3, head_lr=1e-2, checkpoint_minutes=0,
                      checkpoint_every=3)
    out = []

    train_teacher(out=work / "teacher", dataset=data, config=TeacherConfig(backbone=str(backbone)),
                  train_config=TrainConfig(**tagger_cfg), quiet=True)
    out.append(record("bert-crf teacher", work / "teacher", ("model.safetensors",), "train_log.jsonl"))

    labelled = dict(data, max_train=20)  # the other 16 training sentences are the transfer text
    text = work / "raw.txt"
    text.write_text("\n".join("".join(s) for s in unlabelled_train(labelled).tokens) + "\n", encoding="utf-8")
    train_student(out=work / "student", teacher=work / "teacher", student=BiLSTMCRFConfig(), dataset=labelled,
                  transfer=TransferConfig((text,), 0.5), kd=KDConfig(kd="both"), quiet=True,
                  train_config=default_train_config("bilstm-crf", epochs=2, batch_size=8, checkpoint_minutes=0))
    out.append(record("bilstm-crf student, KD + transfer", work / "student", ("model.safetensors",), "train_log.jsonl"))

    toy = TextDataset("toy", toy_texts(64, 1, "toy:train"), toy_texts(16, 2, "toy:dev"), toy_texts(32, 3, "toy:test"),
                      CLASSES)
    torch.manual_seed(0)
    model = BertClassifier.from_backbone(str(backbone), CLASSES, max_length=16)
    train_classifier(model=model, data=toy, out=work / "classifier", quiet=True,
                     cfg=TrainConfig(epochs=2, batch_size=8, lr=1e-3, embedding_lr=1e-3, head_lr=1e-2,
                                     checkpoint_minutes=0, checkpoint_every=3))
    out.append(record("bert-cls classifier", work / "classifier", ("model.safetensors",), "train_log.jsonl"))

    zh = work / "zh.txt"
    zh.write_text("\n".join("".join(s) for s in read_msra(train_file).tokens) + "\n", encoding="utf-8")
    adapt_backbone(out=work / "adapted", backbone=str(backbone), text=zh, steps=7, batch_size=8,
                   embeddings_only_steps=2, checkpoint_every=4, quiet=True)
    out.append(record("mlm adaptation", work / "adapted", ("model.safetensors", "mlm_head.safetensors"),
                      "adapt_log.jsonl"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="also write the lines to this file")
    args = ap.parse_args()
    import torch

    from distill.cli.common import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        lines = [json.dumps(r, ensure_ascii=False) for r in runs(Path(tmp))]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
