from distill.modeling import load_model


def test_tiny_teacher_round_trip(tiny_teacher):
    model = load_model(tiny_teacher)
    assert model.kind == "bert-crf"
    assert model.meta["vocabulary"]["added"] > 0
