"""The comparison report on tiny models: every column there and consistent across
Markdown, JSON and CSV; plots written; folders that are not models skipped; errors."""

import csv
import json
import shutil
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from distill.bench_measure import count_parameters, latency_subset
from distill.cli import app
from distill.data import load_dataset
from distill.errors import DistillError
from distill.evaluate import evaluate
from distill.modeling import load_model
from distill.report import COLUMNS, fmt, make_report

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_teacher, tiny_backbone, tiny_dataset_kwargs):
    """A run folder: the tiny teacher, a 1-layer "student" one folder deeper, and clutter."""
    from distill.train import TrainConfig
    from teachers.train import TeacherConfig, train_teacher

    run = tmp_path_factory.mktemp("run")
    shutil.copytree(tiny_teacher, run / "teacher")
    scratch = tmp_path_factory.mktemp("scratch") / "small"
    train_teacher(out=scratch, dataset=tiny_dataset_kwargs,
                  config=TeacherConfig(backbone=str(tiny_backbone), num_layers=1),
                  train_config=TrainConfig(epochs=1, batch_size=8, lr=1e-3, checkpoint_minutes=0), quiet=True)
    load_model(scratch).save(run / "students" / "small", {"role": "student"})
    shutil.copy(scratch / "train_log.jsonl", run / "students" / "small" / "train_log.jsonl")
    # not models: a training work folder and an emissions folder (even with a distill.json inside)
    for junk in (run / "teacher.work", run / "teacher" / "emissions-train"):
        junk.mkdir(exist_ok=True)  # other tests may have emitted into the shared tiny teacher already
        shutil.copy(run / "teacher" / "distill.json", junk / "distill.json")
    from quantize.api import quantize

    for method in ("int8", "onnx-int8"):  # a PyTorch int8 row and an ONNX Runtime row
        quantize(method=method, model=run / "teacher", out=run / f"teacher-{method}", dataset=tiny_dataset_kwargs,
                 quiet=True)
    (run / "broken").mkdir()
    (run / "broken" / "distill.json").write_text("{", encoding="utf-8")
    report = make_report(run_dir=run, dataset=tiny_dataset_kwargs, threads=1, latency_sentences=5, warmup=1,
                         gpu=False, command="distill report RUN", quiet=True)
    return run, report


def test_every_model_measured_with_consistent_columns(tiny_run, tiny_dataset_kwargs):
    run, report = tiny_run
    assert [r["name"] for r in report["models"]] == ["teacher", "students/small", "teacher-int8", "teacher-onnx-int8"]
    assert report["teacher"] == "teacher"  # teacher-int8 keeps role "teacher" but derives from it
    ds = load_dataset(**tiny_dataset_kwargs)
    rows = {r["name"]: r for r in report["models"]}
    for row in report["models"]:
        assert all(row.get(key) is not None for key, _, _ in COLUMNS if key != "f1_vs_gold"), row
        assert row["f1_vs_gold"] is None  # no gold-only twin of a distilled student here
        model = load_model(row["folder"])
        # the same predictions as an in-process evaluation: batching does not change a CRF's tags
        assert row["f1"] == pytest.approx(evaluate(model, ds.test)["f1"])
        weights = [p for p in (run / row["name"]).iterdir() if p.suffix in (".safetensors", ".onnx", ".data")]
        assert row["size_mb"] == pytest.approx(sum(p.stat().st_size for p in weights) / 2**20)
        assert row["latency_ms_p90"] >= row["latency_ms_median"] > 0
        assert row["throughput"] > 0 and row["device"] == "cpu" and row["threads"] == 1
        assert row["latency_sentences"] == 5
        assert row["peak_rss_mb"] > report["method"]["baseline_rss_mb"] > 0
        assert set(row["per_type"]) == set(ds.test.entity_types())
    teacher, small = rows["teacher"], rows["students/small"]
    for row in (teacher, small):
        assert row["parameters"] == sum(p.numel() for p in load_model(row["folder"]).parameters())
        assert row["parameters_note"] == ""
    # int8 weights are unpacked to count them: the same number as the fp32 teacher's
    assert rows["teacher-int8"]["parameters"] == teacher["parameters"]
    assert "int8" in rows["teacher-int8"]["parameters_note"]
    assert "approximate" in rows["teacher-onnx-int8"]["parameters_note"]
    assert 0.9 * teacher["parameters"] < rows["teacher-onnx-int8"]["parameters"] < 1.2 * teacher["parameters"]
    assert teacher["f1_delta"] == 0 and teacher["speedup_b1"] == 1 and teacher["speedup_b32"] == 1
    assert small["f1_delta"] == pytest.approx(small["f1"] - teacher["f1"])
    assert small["speedup_b1"] == pytest.approx(teacher["latency_ms_median"] / small["latency_ms_median"])
    assert small["parameters"] < teacher["parameters"]  # one encoder layer instead of two
    assert report["dataset"]["test_sentences"] == len(ds.test)
    assert report["dataset"]["fingerprint"] == ds.fingerprint()


def test_markdown_json_and_csv_agree(tiny_run):
    run, report = tiny_run
    assert json.loads((run / "report" / "report.json").read_text(encoding="utf-8"))["models"] == report["models"]
    md = (run / "report" / "report.md").read_text(encoding="utf-8")
    header = "| " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    lines = md.splitlines()
    start = lines.index(header) + 2
    table = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[start : start + len(report["models"])]]
    assert len(table) == 4
    for cells, row in zip(table, report["models"]):
        assert cells == [fmt(row[key], how) for key, _, how in COLUMNS]
    with open(run / "report" / "report.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == [r["name"] for r in report["models"]]
    for r, row in zip(rows, report["models"]):
        for key, _, how in COLUMNS:
            if how == "text":
                assert r[key] == str(row[key])
            elif row[key] is None:  # does not apply (ΔF1 vs no KD of a model with no gold-only twin)
                assert r[key] == ""
            else:
                assert float(r[key]) == pytest.approx(row[key])
        for t, m in row["per_type"].items():
            assert float(r[f"{t}_f1"]) == pytest.approx(m["f1"])


def test_header_method_and_gpu_sentence(tiny_run):
    run, report = tiny_run
    md = (run / "report" / "report.md").read_text(encoding="utf-8")
    assert "`distill report RUN`" in md and report["dataset"]["fingerprint"] in md
    assert "**1 threads**" in md and "end to end, from tokens to tags" in md
    assert "over 5 test sentences" in md
    assert "GPU latency, throughput and memory were not measured" in md
    assert report["machine"]["cpu"] and report["machine"]["threads"] == 1
    assert report["libraries"]["torch"].split("+")[0] == torch.__version__.split("+")[0]


def test_plots_written(tiny_run):
    run, report = tiny_run
    assert set(report["plots"]) == {"f1_vs_latency", "training_curves", "confusion_teacher", "label_distribution"}
    for path in report["plots"].values():
        assert (run / "report" / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["training_curves"] == ["students/small", "teacher"]
    counts = report["teacher_confusion"]["counts"]
    assert sum(map(sum, counts)) == report["dataset"]["test_tokens"]
    assert sum(report["dataset"]["train_tag_counts"].values()) == sum(
        len(s) for s in load_dataset(**tiny_run[1]["dataset"]["kwargs"]).train.tokens)


def test_clutter_skipped_and_broken_model_reported(tiny_run):
    run, report = tiny_run
    assert [f["name"] for f in report["failed"]] == ["broken"]
    assert "corrupt model description" in report["failed"][0]["reason"]
    md = (run / "report" / "report.md").read_text(encoding="utf-8")
    assert "**not measured:** broken" in md


def test_a_report_folder_is_replaced_but_a_foreign_folder_is_not(tiny_run, tmp_path, tiny_dataset_kwargs):
    run, _ = tiny_run
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DistillError, match="not a report folder"):
        make_report(run_dir=run, out=foreign, dataset=tiny_dataset_kwargs, quiet=True)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_no_models_is_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DistillError, match="no model folders"):
        make_report(run_dir=tmp_path / "empty", quiet=True)
    r = subprocess.run([sys.executable, "-m", "distill", "report", str(tmp_path / "empty")],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and "no model folders" in r.stderr
    assert not (tmp_path / "empty" / "report").exists()


def test_cli_report(tiny_teacher, tiny_dataset_kwargs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_teacher, run / "teacher")
    r = runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "out"), "--train", str(tiny_dataset_kwargs["train"]),
                            "--test", str(tiny_dataset_kwargs["test"]), "--format", "msra", "--max-test", "8",
                            "--threads", "1", "--latency-sentences", "3", "--warmup", "0", "--no-gpu"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert [m["name"] for m in report["models"]] == ["teacher"]
    assert report["dataset"]["test_sentences"] == 8 and report["method"]["latency_sentences"] == 3
    assert "report written to" in r.output


def test_count_parameters_unpacks_dynamic_int8_and_reads_onnx(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)
            self.lstm = torch.nn.LSTM(4, 3, bidirectional=True, batch_first=True)
            self.out = torch.nn.Linear(6, 5)

    net = Net()
    exact = sum(p.numel() for p in net.parameters())
    assert count_parameters(net, tmp_path) == (exact, "")
    q = torch.ao.quantization.quantize_dynamic(net, {torch.nn.Linear, torch.nn.LSTM}, dtype=torch.qint8)
    n, note = count_parameters(q, tmp_path)
    assert n == exact and "int8" in note

    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 4], [0.0] * 12)
    b = helper.make_tensor("b", TensorProto.FLOAT, [4], [0.0] * 4)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w, b])
    onnx.save(helper.make_model(graph), str(tmp_path / "model.onnx"))
    n, note = count_parameters(object(), tmp_path)
    assert n == 16 and "approximate" in note


def test_latency_subset_spreads_over_the_test_set():
    assert latency_subset(10, 20) == list(range(10))
    idx = latency_subset(1000, 4)
    assert idx == [0, 250, 500, 750]


def test_distilled_students_are_compared_with_their_gold_only_twin():
    """ΔF1 vs no KD: a distilled student (and its compressed forms) against the student of the
    same identity trained on gold tags alone; not against another size or data."""
    from distill.report_steps import _compare, student_identity

    def student(name, f1, alpha, hidden=256, compressed=False, transfer=0):
        params = {"arch": "bilstm-crf", "alpha": alpha, "temperature": 4.0, "kd": "emission", "hidden_size": hidden,
                  "dataset": {"name": "msra", "max_train": 8000}, "train_config": {"epochs": 12, "lr": 2e-3,
                                                                                  "checkpoint_minutes": 10.0}}
        return {"name": name, "f1": f1, "latency_ms_median": 1.0, "throughput": 100.0, "role": "student",
                "student": student_identity(params), "alpha": alpha, "compressed": compressed, "transfer": transfer}

    rows = [student("gold", 0.70, 1.0), student("kd", 0.75, 0.5, transfer=40000),
            student("kd-onnx-int8", 0.748, 0.5, compressed=True), student("big-kd", 0.80, 0.5, hidden=600),
            {"name": "teacher", "f1": 0.85, "latency_ms_median": 10.0, "throughput": 10.0, "role": "teacher",
             "student": None}]
    _compare(rows, rows[-1])
    by = {r["name"]: r for r in rows}
    assert by["kd"]["f1_vs_gold"] == pytest.approx(0.05)
    assert by["kd-onnx-int8"]["f1_vs_gold"] == pytest.approx(0.048)
    assert by["gold"]["f1_vs_gold"] is None and by["teacher"]["f1_vs_gold"] is None
    assert by["big-kd"]["f1_vs_gold"] is None  # another size: no twin
    assert by["kd"]["f1_delta"] == pytest.approx(-0.10)


def test_find_models_follows_links_once(tmp_path):
    from distill.report_steps import find_models

    elsewhere = tmp_path / "elsewhere" / "bilstm"
    elsewhere.mkdir(parents=True)
    (elsewhere / "distill.json").write_text("{}", encoding="utf-8")
    run = tmp_path / "side-by-side"
    (run / "teacher").mkdir(parents=True)
    (run / "teacher" / "distill.json").write_text("{}", encoding="utf-8")
    (run / "bilstm").symlink_to(elsewhere, target_is_directory=True)  # a link to a model elsewhere
    (run / "again").symlink_to(elsewhere, target_is_directory=True)  # the same model linked twice
    (run / "teacher" / "loop").symlink_to(run, target_is_directory=True)  # a link back up the tree
    assert [(e.name, e.folder) for e in find_models(run)] == [("again", run / "again"), ("teacher", run / "teacher")]


@pytest.mark.parametrize("argv0, expected", [
    ("/venv/bin/distill", "distill run runs/x --profile cpu"),
    ("/src/distill/__main__.py", "distill run runs/x --profile cpu"),  # python -m distill
    ("/src/other/__main__.py", "python /src/other/__main__.py run runs/x --profile cpu"),
])
def test_the_report_names_the_command_as_typed(monkeypatch, argv0, expected):
    from distill.report_steps import _default_command

    monkeypatch.setattr(sys, "argv", [argv0, "run", "runs/x", "--profile", "cpu"])
    monkeypatch.setattr(sys, "executable", "/usr/bin/python")
    assert _default_command() == expected
