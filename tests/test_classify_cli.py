"""Text classification from the command line, end to end on a tiny TSV corpus and a tiny
BERT: teacher train --task classify, a distilled BiLSTM with a transfer text file and its
gold-only twin, eval, predict (text and JSON) and the report on the run folder; and the
user errors (a bad TSV line, a tagging student on a classifier teacher) as one line, exit 1,
nothing written."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from conftest import make_tiny_backbone

POSITIVE = ["good", "great", "love", "nice", "happy", "fine"]
NEGATIVE = ["bad", "awful", "hate", "poor", "sad", "broken"]
FILLER = ["the", "phone", "battery", "screen", "delivery", "price", "case", "it"]


def _texts(n: int, seed: int, tag: str) -> list[tuple[str, str]]:
    """``n`` distinct (text, label) pairs: filler words around one or two sentiment words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.sample(FILLER, 3) + rng.sample(POSITIVE if label == "pos" else NEGATIVE, 2)
        rng.shuffle(words)
        rows.append((" ".join(words) + f" {tag}{i}", label))
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("text")
    files = {}
    for name, n, seed in (("train", 48, 1), ("dev", 12, 2), ("test", 12, 3)):
        path = root / f"{name}.tsv"
        path.write_text("text\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in _texts(n, seed, name[:2])),
                        encoding="utf-8")
        files[name] = path
    files["transfer"] = root / "transfer.txt"
    files["transfer"].write_text("".join(f"{t}\n" for t, _ in _texts(20, 4, "tr")), encoding="utf-8")
    files["raw"] = root / "raw.txt"
    files["raw"].write_text("love the phone\n\nthe battery is broken\nfine price\n", encoding="utf-8")
    bad = root / "bad.tsv"
    bad.write_text("text\tlabel\ngreat phone\tpos\nno label here\n", encoding="utf-8")
    files["bad"] = bad
    files["backbone"] = make_tiny_backbone(root / "backbone")
    return files


def _data_args(d) -> list[str]:
    return ["--train", str(d["train"]), "--dev", str(d["dev"]), "--test", str(d["test"])]


STEPS = ["--epochs", "1", "--max-steps", "3", "--batch-size", "8", "--checkpoint-minutes", "0"]
BILSTM = ["--arch", "bilstm", "--embedding-dim", "16", "--hidden-size", "16"]


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    """A run folder: a classifier teacher, a distilled BiLSTM (with the transfer file) and its gold-only twin."""
    run_dir = tmp_path_factory.mktemp("run")
    printed = _ok(["teacher", "train", "--task", "classify", "--backbone", str(data["backbone"]),
                   "--out", str(run_dir / "teacher"), "--lr", "1e-3", *STEPS, *_data_args(data)])
    assert "best dev macro-F1" in printed
    _ok(["student", "--teacher", str(run_dir / "teacher"), *BILSTM, "--alpha", "0.5", "--transfer", str(data["transfer"]),
         "--out", str(run_dir / "bilstm-kd"), *STEPS, *_data_args(data)])
    _ok(["student", "--task", "classify", *BILSTM, "--alpha", "1", "--out", str(run_dir / "bilstm"), *STEPS,
         *_data_args(data)])
    return run_dir


def _ok(args: list[str]) -> str:
    """Run a command that must succeed; its output."""
    from typer.testing import CliRunner

    from distill.cli import app

    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    return r.output


def _meta(folder: Path) -> dict:
    return json.loads((folder / "distill.json").read_text(encoding="utf-8"))


def test_teacher_and_students_record_the_task_and_their_data(run, data):
    teacher = _meta(run / "teacher")
    assert teacher["kind"] == "bert-cls" and teacher["labels"] == ["neg", "pos"]
    assert teacher["meta"]["task"] == "classify" and teacher["meta"]["role"] == "teacher"
    params = teacher["meta"]["params"]
    assert params["max_length"] == 256 and params["dropout"] == 0.1 and params["backbone"] == str(data["backbone"])
    assert params["dataset"]["task"] == "classify" and params["dataset"]["train"] == str(data["train"])
    assert params["train_config"]["lr"] == 1e-3

    kd = _meta(run / "bilstm-kd")
    assert kd["kind"] == "bilstm-cls" and kd["meta"]["task"] == "classify"
    assert kd["meta"]["params"]["alpha"] == 0.5 and kd["meta"]["params"]["temperature"] == 1.0
    assert kd["meta"]["training"]["train_sentences"] == 48 and kd["meta"]["training"]["transfer_sentences"] == 20
    assert kd["meta"]["transfer"]["texts"] == 20 and kd["meta"]["transfer"]["sources"] == [str(data["transfer"])]
    assert kd["config"]["hidden_size"] == 16
    # the teacher's logits of the train and transfer texts were cached in its folder
    assert len(list((run / "teacher").glob("logits-*.npy"))) == 2

    gold = _meta(run / "bilstm")
    assert gold["meta"]["teacher"] is None and gold["meta"]["params"]["alpha"] == 1.0
    assert gold["meta"]["training"]["transfer_sentences"] == 0
    from distill.report_steps import student_identity

    assert student_identity(gold["meta"]["params"]) == student_identity(kd["meta"]["params"])


def test_teacher_emit_finds_the_logits_the_student_used(run, data, run_cli):
    cached = sorted((run / "teacher").glob("logits-*.npy"))
    r = run_cli(["teacher", "emit", str(run / "teacher"), "--text", str(data["transfer"]), *_data_args(data)])
    assert r.code == 0, r.err
    r2 = run_cli(["teacher", "emit", str(run / "teacher"), *_data_args(data)])
    assert r2.code == 0, r2.err
    written = [Path(line.split(" written to ")[1]) for line in (r.out + r2.out).splitlines() if " written to " in line]
    assert sorted(written) == cached == sorted((run / "teacher").glob("logits-*.npy"))


def test_bert_small_student_copies_teacher_layers(run, data, tmp_path):
    out = tmp_path / "bert-small"
    _ok(["student", "--teacher", str(run / "teacher"), "--arch", "bert-small", "--num-layers", "1", "--alpha", "0.5",
         "--T", "2", "--out", str(out), *STEPS, *_data_args(data)])
    info = _meta(out)
    assert info["kind"] == "bert-cls" and info["config"]["num_layers"] == 1 and info["meta"]["layers"] == [0]
    assert info["meta"]["role"] == "student" and info["meta"]["params"]["temperature"] == 2.0
    assert info["meta"]["params"]["hidden_size"] is None  # a BiLSTM option: not part of this student


def test_eval_prints_and_writes_accuracy_macro_f1_and_per_class(run, data, tmp_path):
    out = tmp_path / "eval.json"
    printed = _ok(["eval", str(run / "bilstm-kd"), "--test", str(data["test"]), "--out", str(out)])
    metrics = json.loads(out.read_text(encoding="utf-8"))
    assert metrics["task"] == "classify" and metrics["n"] == 12 and metrics["split"] == "test"
    assert set(metrics["per_class"]) == {"neg", "pos"}
    assert sum(c["support"] for c in metrics["per_class"].values()) == 12
    assert metrics["macro_f1"] == pytest.approx(sum(c["f1"] for c in metrics["per_class"].values()) / 2)
    assert f"accuracy {metrics['accuracy']:.4f} (12 texts), macro-F1 {metrics['macro_f1']:.4f}" in printed
    # the score is the score of what predict writes
    pred = tmp_path / "pred.txt"
    texts = [l.split("\t")[0] for l in data["test"].read_text(encoding="utf-8").splitlines()[1:]]
    gold = [l.split("\t")[1] for l in data["test"].read_text(encoding="utf-8").splitlines()[1:]]
    (tmp_path / "test.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    _ok(["predict", str(run / "bilstm-kd"), "--input", str(tmp_path / "test.txt"), "--out", str(pred)])
    labels = [l.split("\t")[0] for l in pred.read_text(encoding="utf-8").splitlines()]
    assert metrics["accuracy"] == pytest.approx(sum(g == p for g, p in zip(gold, labels)) / 12)


def test_teacher_eval_on_a_classifier_defaults_to_its_training_data(run):
    _ok(["teacher", "eval", str(run / "teacher"), "--split", "dev"])
    metrics = json.loads((run / "teacher" / "eval.json").read_text(encoding="utf-8"))
    assert metrics["split"] == "dev" and metrics["n"] == 12 and 0 <= metrics["accuracy"] <= 1


def test_predict_text_and_json(run, data, run_cli, tmp_path):
    out = tmp_path / "pred.txt"
    _ok(["predict", str(run / "teacher"), "--input", str(data["raw"]), "--out", str(out)])
    rows = [l.split("\t") for l in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 3 and all(len(r) == 3 for r in rows)  # label, p(neg), p(pos); the blank line skipped
    for label, p_neg, p_pos in rows:
        assert float(p_neg) + float(p_pos) == pytest.approx(1, abs=1e-5)
        assert label == ("neg" if float(p_neg) > float(p_pos) else "pos")

    out_json = tmp_path / "pred.jsonl"
    _ok(["predict", str(run / "teacher"), "--input", str(data["raw"]), "--json", "--out", str(out_json)])
    objs = [json.loads(l) for l in out_json.read_text(encoding="utf-8").splitlines()]
    assert [o["text"] for o in objs] == ["love the phone", "the battery is broken", "fine price"]
    for o, (label, p_neg, p_pos) in zip(objs, rows):
        assert o["label"] == label and set(o["probabilities"]) == {"neg", "pos"}
        assert o["probabilities"]["pos"] == pytest.approx(float(p_pos), abs=1e-5)

    r = run_cli(["predict", str(run / "teacher"), "love it", "--output-format", "conll"])
    assert r.code == 1 and len(r.err_lines) == 1
    assert "a text classifier writes --output-format text or json" in r.err_lines[0]
    r = run_cli(["predict", str(run / "teacher"), "love it"])  # TEXT to stdout
    assert r.code == 0 and r.out.count("\n") == 1 and r.out.split("\t")[0] in ("neg", "pos")


def test_report_on_a_run_of_classifiers(run, data):
    out = run / "report"
    _ok(["report", str(run), "--test", str(data["test"]), "--threads", "1", "--latency-sentences", "3", "--warmup", "1",
         "--no-gpu"])
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["task"] == "classify" and report["teacher"] == "teacher" and not report["failed"]
    rows = {r["name"]: r for r in report["models"]}
    assert set(rows) == {"teacher", "bilstm-kd", "bilstm"}
    kd, gold = rows["bilstm-kd"], rows["bilstm"]
    assert kd["f1_vs_gold"] == pytest.approx(kd["macro_f1"] - gold["macro_f1"])
    assert kd["acc_vs_gold"] == pytest.approx(kd["accuracy"] - gold["accuracy"])
    assert rows["teacher"]["f1_vs_gold"] is None and gold["f1_vs_gold"] is None
    assert kd["f1_delta"] == pytest.approx(kd["macro_f1"] - rows["teacher"]["macro_f1"])
    assert (kd["labelled"], kd["transfer"]) == (48, 20) and (gold["labelled"], gold["transfer"]) == (48, 0)
    for r in rows.values():
        assert r["latency_ms_median"] > 0 and r["throughput"] > 0 and r["parameters"] > 0 and r["size_mb"] > 0
        assert set(r["per_class"]) == {"neg", "pos"}
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "text classification" in md and "## Per class" in md and "| neg P |" in md and "ΔF1 vs no KD" in md
    assert report["dataset"]["test_texts"] == 12 and report["dataset"]["labels"] == ["neg", "pos"]
    for plot in ("f1_vs_latency", "accuracy_vs_latency", "training_curves", "confusion_teacher", "label_distribution"):
        assert (out / report["plots"][plot]).stat().st_size > 0
    assert (out / "report.csv").read_text(encoding="utf-8").startswith("name,kind,accuracy,macro_f1")


def test_a_bad_tsv_line_is_one_line_and_nothing_is_written(data, run_cli, tmp_path):
    out = tmp_path / "t"
    code, _, err = run_cli(["teacher", "train", "--task", "classify", "--backbone", str(data["backbone"]), "--out",
                            str(out), "--train", str(data["bad"]), *STEPS])
    err = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(err) == 1
    assert err[0].startswith(f"error: {data['bad']}:3: ") and "expected" in err[0]  # the file, the line, what was expected
    assert not out.exists() and not (tmp_path / "t.work").exists()


@pytest.mark.parametrize("args, message", [
    (["--arch", "bilstm-crf"], "--arch bilstm-crf is a tagging student; a text classifier's students are bilstm, bert-small"),
    (["--arch", "bilstm", "--kd", "marginal"], "--kd is for tagging; it does not apply to --task classify"),
    (["--task", "tag"], "is a text classifier (task 'classify'); --task tag does not apply"),
    (["--arch", "bilstm", "--T", "0"], "temperature (--T) must be > 0, got 0.0"),
])
def test_tagging_options_on_a_classifier_teacher(args, message, run, data, run_cli, tmp_path):
    out = tmp_path / "s"
    r = run_cli(["student", "--teacher", str(run / "teacher"), "--out", str(out), *STEPS, *_data_args(data), *args])
    assert r.code == 1 and len(r.err_lines) == 1 and r.err_lines[0].startswith("error: ") and message in r.err, r.err
    assert not out.exists() and not (tmp_path / "s.work").exists()


def test_a_tagging_teacher_is_refused_for_a_classifier_student(tiny_teacher, data, run_cli, tmp_path):
    out = tmp_path / "s"
    r = run_cli(["student", "--teacher", str(tiny_teacher), "--task", "classify", "--out", str(out), *STEPS,
                 *_data_args(data)])
    assert r.code == 1 and len(r.err_lines) == 1
    assert r.err_lines[0] == f"error: {tiny_teacher}: is a tagger (task 'tag'); --task classify does not apply"
    assert not out.exists()
