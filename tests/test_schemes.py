import pytest

from distill import schemes
from distill.schemes import Span


@pytest.mark.parametrize("tags,scheme", [
    (["B-PER", "I-PER", "O", "B-LOC"], "BIO"),
    (["I-PER", "I-PER", "O", "I-LOC", "B-LOC"], "IOB1"),
    (["B-PER", "E-PER", "O", "S-LOC"], "BIOES"),
    (["B-PER", "I-PER", "E-PER", "S-LOC"], "BIOES"),
    (["B-ORG", "M-ORG", "E-ORG", "O", "S-PER"], "BMES"),
    (["B_PER", "I_PER", "O"], "BIO"),
    (["O", "O"], "BIO"),
])
def test_detect_scheme(tags, scheme):
    assert schemes.detect_scheme([tags]) == scheme


SPANS = [Span(0, 2, "PER"), Span(2, 3, "PER"), Span(4, 5, "LOC"), Span(5, 8, "ORG")]


@pytest.mark.parametrize("scheme,expected", [
    ("BIO", ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "I-ORG", "I-ORG"]),
    ("IOB1", ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "I-ORG", "I-ORG"]),
    ("BIOES", ["B-PER", "E-PER", "S-PER", "O", "S-LOC", "B-ORG", "I-ORG", "E-ORG"]),
    ("BMES", ["B-PER", "E-PER", "S-PER", "O", "S-LOC", "B-ORG", "M-ORG", "E-ORG"]),
])
def test_spans_round_trip_every_scheme(scheme, expected):
    tags = schemes.from_spans(SPANS, 8, scheme)
    assert tags == expected
    assert schemes.to_spans(tags, scheme) == SPANS
    # and through BIO and back
    bio = schemes.convert(tags, scheme, "BIO")
    assert schemes.convert(bio, "BIO", scheme) == expected


def test_underscore_separator_is_kept():
    assert schemes.convert(["B-PER", "I-PER"], "BIO", "BMES", sep="_") == ["B_PER", "E_PER"]
    assert schemes.parse_tag("B_LOC") == ("B", "LOC", "_")


@pytest.mark.parametrize("bad", ["X-PER", "B-", "BPER", "b-PER", "", "B:PER"])
def test_tag_that_fits_no_scheme(bad):
    with pytest.raises(schemes.TagError, match="fits no scheme"):
        schemes.parse_tag(bad)


def test_lenient_reading_of_stray_inside_tag():
    # BIO with an I- that starts an entity is read as an entity start (as seqeval does)
    assert schemes.to_spans(["O", "I-PER", "I-PER"], "BIO") == [Span(1, 3, "PER")]
    # a type change inside an entity closes it
    assert schemes.to_spans(["B-PER", "I-LOC"], "BIO") == [Span(0, 1, "PER"), Span(1, 2, "LOC")]


def test_bio_labels_order():
    assert schemes.bio_labels(["PER", "LOC", "PER"]) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_allowed_transitions_forbid_exactly_the_invalid_iob2_moves():
    from distill.schemes import allowed_transitions

    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    start, trans = allowed_transitions(labels)
    assert start.tolist() == [True, True, False, True, False]
    # I-LOC only after B-LOC or I-LOC; I-PER only after B-PER or I-PER; the rest free
    assert trans[:, 2].tolist() == [False, True, True, False, False]
    assert trans[:, 4].tolist() == [False, False, False, True, True]
    assert trans[:, [0, 1, 3]].all()


def test_entity_metrics_score_invalid_paths_as_predict_writes_them():
    """A stray I-X is an entity in what predict writes (and for conlleval), so it is a
    false positive here too; strict seqeval on the raw path would drop it silently."""
    from distill.evaluate import as_written, entity_metrics

    gold = [["B-LOC", "I-LOC", "O", "O"]]
    pred = [["B-LOC", "I-LOC", "O", "I-PER"]]
    assert as_written(pred[0]) == ["B-LOC", "I-LOC", "O", "B-PER"]
    m = entity_metrics(gold, pred)
    assert (m["precision"], m["recall"]) == (0.5, 1.0)
