"""Knowledge-distillation losses for CRF taggers.

The student's training loss on a batch is

    loss = alpha * NLL(gold) + (1 - alpha) * KD + hidden_weight * HIDDEN

* ``NLL(gold)`` is the student's CRF negative log-likelihood of the gold tags, summed
  over the batch's labelled sentences G and divided by their real words:
  ``sum_{b in G} NLL_b / sum_{b in G} n_b`` (``Tagger.loss`` on those rows). A batch
  that mixes in unlabelled transfer sentences carries ``batch["gold"]`` (B,) bool, true
  at labelled sentences; without it every sentence is labelled, and ``NLL(gold)`` is
  exactly ``Tagger.loss`` on the batch. With no labelled sentence in the batch it is 0:
  transfer sentences add no gold-tag term, only KD.
* ``KD`` is one of :data:`KD_LOSSES`, each a per-word KL divergence at temperature T,
  multiplied by T^2 (so its gradients keep their size as T changes; Hinton et al.
  2015) and averaged over the real (unmasked) word positions only; padded positions
  add nothing to the sum nor to the count:

  - ``emission``:  T^2 * mean_{b,t: mask} KL( softmax(e_teacher[b,t] / T) || softmax(e_student[b,t] / T) )
  - ``marginal``:  T^2 * mean_{b,t: mask} KL( q_teacher[b,t] || q_student[b,t] ), where q[b,t,k] =
    p(y_t = k | x) is the CRF posterior marginal of the tempered CRF (emissions and
    transitions divided by T), by forward-backward: structure-level KD (Wang et al. 2020,
    "Structure-Level Knowledge Distillation for Multilingual Sequence Labeling"). The
    teacher's marginals use the teacher's emissions and its CRF transitions stored with them.
  - ``both``:      emission + marginal, each weighted 1 (each already carries its T^2).
  - ``viterbi``:   hard labels, no temperature: the student's CRF NLL of the teacher's
    decoded path y_teacher (constrained Viterbi over the teacher's emissions and stored
    transitions, valid BIO paths only), summed over all sentences of the batch and
    divided by all their real words. A labelled sentence thus gets alpha * NLL(gold) +
    (1 - alpha) * NLL(y_teacher), a transfer sentence (1 - alpha) * NLL(y_teacher).

  KD covers every sentence of the batch, labelled and transfer alike.

* ``HIDDEN`` (small BERT students only, weight 0 by default) is the mean squared error
  between the student's hidden states and the teacher's, over real sub-token positions,
  averaged over matched layers (:func:`hidden_layer_pairs`). The teacher's hidden states
  are not stored with its emissions, so this term runs the teacher on every batch.

With ``alpha == 1`` and ``hidden_weight == 0`` the loss is exactly the plain CRF loss
and no teacher output is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from distill.config import ConfigError
from distill.crf import CRF
from distill.errors import DistillError
from distill.modeling import TaggerOutput

# A student probability this small is treated as this small (log of an underflowed marginal).
_EPS = 1e-12


def emission_kl(student_emissions: Tensor, teacher_emissions: Tensor, mask: Tensor, temperature: float) -> Tensor:
    """T^2 * mean over real positions of KL(softmax(teacher / T) || softmax(student / T)).

    student_emissions, teacher_emissions: (B, W, K); mask: (B, W) bool. Returns a scalar.
    """
    T = temperature
    log_p_teacher = torch.log_softmax(teacher_emissions.float() / T, dim=-1)  # shape: (B, W, K)
    log_p_student = torch.log_softmax(student_emissions.float() / T, dim=-1)  # shape: (B, W, K)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)  # shape: (B, W)
    return _masked_mean(kl, mask) * T * T


def marginal_kl(student_marginals: Tensor, teacher_marginals: Tensor, mask: Tensor, temperature: float) -> Tensor:
    """T^2 * mean over real positions of KL(q_teacher || q_student) between CRF posterior
    marginals (B, W, K) (each row sums to 1 at real positions); mask: (B, W) bool."""
    q_t, q_s = teacher_marginals.float(), student_marginals.float()
    kl = (q_t * (torch.log(q_t + _EPS) - torch.log(q_s + _EPS))).sum(-1)  # shape: (B, W)
    return _masked_mean(kl, mask) * temperature * temperature


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of (B, W) ``values`` over the positions where ``mask`` is true."""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp_min(1)


# --- the registry: (student, output, batch, teacher CRF, T) -> scalar ---------------


def emission_term(student, out, batch: dict, teacher_crf: CRF | None, temperature: float) -> Tensor:
    return emission_kl(out.emissions, batch["teacher_emissions"], out.mask, temperature)


def marginal_term(student, out, batch: dict, teacher_crf: CRF | None, temperature: float) -> Tensor:
    if teacher_crf is None or student.crf is None:
        raise DistillError("marginal KD needs CRF transitions for both teacher and student")
    with torch.no_grad():
        q_teacher = teacher_crf.marginals(batch["teacher_emissions"].float(), out.mask, temperature)
    q_student = student.crf.marginals(out.emissions.float(), out.mask, temperature)
    return marginal_kl(q_student, q_teacher, out.mask, temperature)


def both_term(student, out, batch: dict, teacher_crf: CRF | None, temperature: float) -> Tensor:
    return (emission_term(student, out, batch, teacher_crf, temperature)
            + marginal_term(student, out, batch, teacher_crf, temperature))


def teacher_path(teacher_crf: CRF, teacher_emissions: Tensor, mask: Tensor, labels: Sequence[str]) -> Tensor:
    """The teacher's best valid tag path (B, W) long, 0 at padding: constrained Viterbi over
    ``teacher_emissions`` (B, W, K) with ``mask`` (B, W) bool and the teacher's transitions."""
    from distill.schemes import allowed_transitions

    return teacher_crf.decode(teacher_emissions.float(), mask, pad=0, allowed=allowed_transitions(labels))


def viterbi_term(student, out, batch: dict, teacher_crf: CRF | None, temperature: float) -> Tensor:
    if teacher_crf is None:
        raise DistillError("viterbi KD needs the teacher's CRF transitions")
    path = teacher_path(teacher_crf, batch["teacher_emissions"], out.mask, student.labels)  # shape: (B, W)
    return student.loss(out, path)


KD_LOSSES: dict[str, Callable[..., Tensor]] = {"emission": emission_term, "marginal": marginal_term, "both": both_term,
                                               "viterbi": viterbi_term}


def kd_term(name: str) -> Callable[..., Tensor]:
    if name not in KD_LOSSES:
        raise DistillError(f"unknown KD loss {name!r}; expected one of {', '.join(KD_LOSSES)}")
    return KD_LOSSES[name]


@dataclass
class KDConfig:
    """How a student learns from its teacher (see the module docstring for the formula)."""

    alpha: float = 0.5  # weight of the gold-tag CRF loss; 1 - alpha goes to the KD term
    temperature: float = 4.0
    kd: str = "emission"  # a key of KD_LOSSES
    hidden_weight: float = 0.0  # weight of hidden-state matching (small BERT students)

    def __post_init__(self):
        if not self.temperature > 0:
            raise ConfigError("temperature (--T)", "> 0", self.temperature)
        if not 0 <= self.alpha <= 1:
            raise ConfigError("alpha", "in [0, 1] (weight of the gold-tag loss)", self.alpha)
        if not self.hidden_weight >= 0:
            raise ConfigError("hidden_weight", ">= 0", self.hidden_weight)
        kd_term(self.kd)

    @property
    def uses_emissions(self) -> bool:
        """Whether the loss reads the teacher's emissions (anything but the plain student)."""
        return self.alpha < 1


def gold_nll(model, out, batch: dict) -> Tensor:
    """``NLL(gold)`` of the module docstring: ``model.loss`` over the labelled sentences of the
    batch (``batch["gold"]`` (B,) bool; all when absent), 0 when there are none."""
    gold = batch.get("gold")
    if gold is None or bool(gold.all()):
        return model.loss(out, batch["tags"])
    if not bool(gold.any()):
        return out.emissions.sum() * 0.0  # no CRF term, but still part of the graph
    g = gold.bool()
    return model.loss(TaggerOutput(out.emissions[g], out.mask[g]), batch["tags"][g])


def teacher_crf(transitions: dict | None, num_tags: int) -> CRF | None:
    """A frozen CRF holding the teacher transitions stored with its emissions
    (``{"start": (K,), "end": (K,), "transitions": (K, K)}``), or None."""
    if transitions is None:
        return None
    crf = CRF(num_tags)
    with torch.no_grad():
        crf.start_transitions.copy_(torch.tensor(transitions["start"]))
        crf.end_transitions.copy_(torch.tensor(transitions["end"]))
        crf.transitions.copy_(torch.tensor(transitions["transitions"]))
    crf.requires_grad_(False)
    return crf


def hidden_layer_pairs(layers: Sequence[int], teacher_layers: int) -> list[tuple[int, int]]:
    """(student, teacher) indices into the ``hidden_states`` tuples (0 = embeddings output,
    i + 1 = output of layer i) that hidden-state matching compares.

    The embeddings match the teacher's embeddings. Student layer i, started from teacher
    layer ``layers[i]``, stands for the teacher's block ``layers[i] .. layers[i+1] - 1``
    (the last block runs to the teacher's last layer), so it is matched to that block's
    output: with layers 0, 2, 4 of 6, student outputs 1, 2, 3 match teacher outputs 2, 4, 6.
    """
    ends = list(layers[1:]) + [teacher_layers]
    return [(0, 0)] + [(i + 1, end) for i, end in enumerate(ends)]


def hidden_mse(student_hidden: Sequence[Tensor], teacher_hidden: Sequence[Tensor], attention_mask: Tensor,
               pairs: Sequence[tuple[int, int]]) -> Tensor:
    """Mean over ``pairs`` of the MSE between (B, S, H) hidden states at real sub-tokens
    (``attention_mask`` (B, S) nonzero), each averaged over positions and features."""
    m = attention_mask.unsqueeze(-1).float()  # shape: (B, S, 1)
    n = m.sum().clamp_min(1) * student_hidden[0].size(-1)
    total = sum(((student_hidden[s] - teacher_hidden[t]) ** 2 * m).sum() / n for s, t in pairs)
    return total / len(pairs)


class DistillationLoss:
    """The training loss ``loss_fn(model, output, batch) -> (loss, parts)`` for
    :func:`distill.train.train`; the formula is in the module docstring.

    ``teacher_crf``: the teacher's transitions (for marginal KD). ``teacher``: the
    teacher model, run on each batch only when ``hidden_weight > 0``. Both are moved
    once, at the first batch, to the device the student trains on.
    """

    def __init__(self, config: KDConfig, teacher_crf: CRF | None = None, teacher=None,
                 layer_pairs: Sequence[tuple[int, int]] | None = None):
        self.config = config
        self.term = kd_term(config.kd)
        self.teacher_crf = teacher_crf
        self.teacher = teacher
        self.layer_pairs = list(layer_pairs or [])
        self._placed = False
        if config.hidden_weight > 0 and (teacher is None or not self.layer_pairs):
            raise DistillError("hidden-state matching needs the teacher model and the layer pairs to compare")

    def __call__(self, model, out, batch: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.config
        if not self._placed:
            self._place(out.emissions.device)
        nll = gold_nll(model, out, batch)
        parts = {"nll": nll.item()}
        loss = nll
        if c.alpha < 1:
            if "teacher_emissions" not in batch:
                raise DistillError("the batch has no teacher emissions; distillation with alpha < 1 needs them")
            kd = self.term(model, out, batch, self.teacher_crf, c.temperature)
            parts["kd"] = kd.item()
            loss = c.alpha * nll + (1 - c.alpha) * kd
        if c.hidden_weight > 0:
            if out.hidden_states is None:
                raise DistillError("the student returned no hidden states; hidden-state matching needs a BERT student")
            with torch.no_grad():
                teacher_hidden = self.teacher(batch, output_hidden_states=True).hidden_states
            hidden = hidden_mse(out.hidden_states, teacher_hidden, batch["attention_mask"], self.layer_pairs)
            parts["hidden"] = hidden.item()
            loss = loss + c.hidden_weight * hidden
        return loss, parts

    def _place(self, device) -> None:
        """Put the teacher's CRF and model on the student's ``device`` (the teacher in eval mode)."""
        if self.teacher_crf is not None:
            self.teacher_crf.to(device)
        if self.teacher is not None:
            self.teacher.to(device).eval()
        self._placed = True


@dataclass
class KDWiring:
    """What :func:`distill.train.train` needs to distil: ``loss_fn`` and, when the loss reads
    the teacher's emissions, ``collate(pieces) -> batch`` giving each batch its slice of them
    (``batch["teacher_emissions"]`` (B, W, K)) and the ``emissions`` folder read."""

    loss_fn: DistillationLoss
    collate: Callable[[Sequence[Any]], dict] | None = None
    emissions: Any = None  # distill.emissions.Emissions


def build_loss(config: KDConfig, student, *, teacher: Path | None, dataset: dict, corpus, labels: Sequence[str],
               emissions: Path | None = None, transfer=None, teacher_model=None, quiet: bool = False) -> KDWiring:
    """The distillation loss of ``student`` and how its batches get the teacher's output:
    the teacher's emissions on ``corpus`` (:func:`distill.emissions.for_training`: the
    ``emissions`` folder, default TEACHER/emissions-train, made when missing) -> the
    teacher CRF stored with them (:func:`teacher_crf`) -> :class:`DistillationLoss` -> a
    collate that attaches each batch's emissions, read from the memory maps
    (:class:`distill.transfer.TeacherEmissions`, transfer sentences from ``transfer``
    included). With ``hidden_weight > 0``, ``teacher_model`` (loaded) is run per batch and
    the student is asked for its hidden states. ``dataset``: kwargs of
    :func:`distill.data.load_dataset` (to emit with)."""
    crf, collate, em = None, None, None
    if config.alpha < 1:
        from distill.emissions import for_training
        from distill.transfer import TeacherEmissions

        em = for_training(teacher=teacher, folder=emissions, dataset=dataset, corpus=corpus, labels=labels, quiet=quiet)
        crf = teacher_crf(em.meta.get("transitions"), len(labels))
        if crf is None and config.kd != "emission":
            raise DistillError(f"{em.folder}: the teacher has no CRF, so --kd {config.kd} is impossible; use --kd emission")
        collate = TeacherEmissions(em, transfer).collate(student)
    pairs = None
    if config.hidden_weight > 0:
        student.return_hidden_states = True
        pairs = hidden_layer_pairs(student.meta["layers"], student.meta["teacher_layers"])
    loss_fn = DistillationLoss(config, teacher_crf=crf, teacher=teacher_model if config.hidden_weight > 0 else None,
                               layer_pairs=pairs)
    return KDWiring(loss_fn, collate, em)
