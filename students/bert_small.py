"""Small BERT student: the teacher's encoder cut to N layers, started from the teacher's
own fine-tuned weights.

The student keeps the teacher's tokenizer, embeddings and hidden size; encoder layer i
starts as teacher layer ``layers[i]``, and the linear layer and CRF start as the teacher's.
The default layers (:func:`default_layers`) are the teacher's first N for a tagger: of
e5-small's 12, layers 0,1,2 reached 0.771 dev F1 against 0.761 for evenly spaced 0,4,8,
0.717 for 0,5,11 and 0.675 for 3,7,11 (benchmarks/bert_small_layers.sh: gold-only students of
the cpu profile's teacher, one epoch on its 8,000 sentences). Classifier students keep evenly
spaced layers (``i * L // N``, as DistilBERT does), not measured against the others. It is
an ordinary ``bert-crf`` model folder (meta role "student"), loaded by
:func:`distill.modeling.load_model` like any teacher.
"""

from __future__ import annotations

import copy
from typing import Sequence

from torch import Tensor

from distill.errors import DistillError
from teachers.bert_crf import BertTagger


PLACEMENTS = ("first", "spread")


def default_layers(teacher_layers: int, num_layers: int, placement: str = "first") -> list[int]:
    """The teacher layers a student keeps by default: ``first``, the first ``num_layers``
    (taggers; chosen on dev, see the module docstring), or ``spread``, evenly spaced from the
    first, ``i * L // N`` (classifiers)."""
    if placement == "first":
        return list(range(num_layers))
    if placement == "spread":
        return [i * teacher_layers // num_layers for i in range(num_layers)]
    raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")


def check_layers(teacher_layers: int, num_layers: int, layers: Sequence[int] | None,
                 placement: str = "first") -> list[int]:
    """The teacher layers to keep (``layers``, or :func:`default_layers` by ``placement``);
    one-line errors for impossible choices."""
    if not 0 < num_layers <= teacher_layers:
        raise DistillError(f"--num-layers must be in 1..{teacher_layers} (the teacher's layers), got {num_layers}")
    if layers is None:
        return default_layers(teacher_layers, num_layers, placement)
    layers = list(layers)
    if len(layers) != num_layers:
        raise DistillError(f"--layers names {len(layers)} layers ({layers}) but --num-layers is {num_layers}")
    bad = [l for l in layers if not 0 <= l < teacher_layers]
    if bad:
        raise DistillError(f"--layers {bad} out of range; the teacher has layers 0..{teacher_layers - 1}")
    if sorted(set(layers)) != layers:
        raise DistillError(f"--layers must be distinct and increasing, got {layers}")
    return layers


def encoder_from_layers(teacher_encoder, num_layers: int, layers: Sequence[int] | None, placement: str = "first"):
    """A new encoder of ``num_layers`` of ``teacher_encoder``'s layers (``layers``, default
    :func:`default_layers` by ``placement``, checked by :func:`check_layers`) and its embeddings,
    copied; returns (the encoder, the teacher's number of layers, the teacher layers kept). For
    the tagging and the classification student alike."""
    from transformers import AutoModel

    total = teacher_encoder.config.num_hidden_layers
    layers = check_layers(total, num_layers, layers, placement)
    config = copy.deepcopy(teacher_encoder.config)
    config.num_hidden_layers = len(layers)
    encoder = AutoModel.from_config(config, add_pooling_layer=False)
    encoder.embeddings.load_state_dict(teacher_encoder.embeddings.state_dict())
    for i, l in enumerate(layers):
        encoder.encoder.layer[i].load_state_dict(teacher_encoder.encoder.layer[l].state_dict())
    return encoder, total, layers


class BertSmallTagger(BertTagger):
    """A ``bert-crf`` tagger that, while training with hidden-state matching, also
    returns its encoder's hidden states (so the one training loop can pass them to the
    loss). It saves as kind ``bert-crf`` and loads back as a plain :class:`BertTagger`."""

    return_hidden_states: bool = False

    def forward(self, batch: dict[str, Tensor], output_hidden_states: bool | None = None):
        if output_hidden_states is None:
            output_hidden_states = self.return_hidden_states and self.training
        return super().forward(batch, output_hidden_states=output_hidden_states)


def build_bert_small(teacher: BertTagger, num_layers: int = 3, layers: Sequence[int] | None = None,
                     meta: dict | None = None) -> BertSmallTagger:
    """A new BERT-CRF whose encoder is ``num_layers`` of ``teacher``'s layers (copied),
    with the teacher's embeddings, tokenizer, head and CRF."""
    if not isinstance(teacher, BertTagger):
        raise DistillError(f"bert-small needs a BERT-CRF teacher (kind 'bert-crf'), got kind {getattr(teacher, 'kind', '?')!r}")
    encoder, total, layers = encoder_from_layers(teacher.encoder, num_layers, layers)
    student = BertSmallTagger(encoder, teacher.tokenizer, teacher.labels, head=teacher.head,
                              dropout=teacher.dropout_p, lstm_hidden=teacher.lstm_hidden,
                              max_length=teacher.max_length + 2, alignment=teacher.alignment,
                              meta=dict(meta or {}, teacher_layers=total, layers=layers,
                                        backbone=teacher.meta.get("backbone"),
                                        vocabulary=teacher.meta.get("vocabulary")))
    student.classifier.load_state_dict(teacher.classifier.state_dict())
    if teacher.piece_shape is not None:
        student.piece_shape.load_state_dict(teacher.piece_shape.state_dict())
    if teacher.lstm is not None:
        student.lstm.load_state_dict(teacher.lstm.state_dict())
    if teacher.crf is not None:
        student.crf.load_state_dict(teacher.crf.state_dict())
    return student
