"""Compression of trained taggers and text classifiers: dynamic int8 (PyTorch, ONNX
Runtime), bitsandbytes 8-bit, fp16, and magnitude / attention-head pruning.

Every method reads an fp32 model folder (``bert-crf``, ``bilstm-crf``, ``bert-cls`` or
``bilstm-cls``; what differs for classifiers is in :mod:`quantize.classify`) and writes a
new model folder that :func:`distill.modeling.load_model` loads like any other, so
``distill eval`` and ``distill predict`` need no compression-specific code. This module
holds what the methods share: loading the source, the folder's meta (``params``,
``source_kind``, the source's meta copied), the wrapper class of the PyTorch-based
kinds, and the dev sample each method is checked on.

Entry points: :func:`quantize.api.quantize` and :func:`quantize.prune.prune`.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import Tensor, nn

from distill.config import DataConfig
from distill.errors import DistillError
from distill.fileio import atomic_dir, stamp, write_json
from distill.modeling import FORMAT_VERSION, META_FILE, Tagger, TaggerOutput, load_model, model_class, read_meta

# The kinds compression starts from: plain fp32 PyTorch taggers and classifiers
# (classifiers, meta "task": "classify", dispatch to quantize.classify where they differ).
SOURCE_KINDS = ("bert-crf", "bilstm-crf", "bert-cls", "bilstm-cls")


def load_source(model: str | Path) -> Tagger:
    """The fp32 model to compress; an already compressed folder is refused with its source named."""
    model = Path(model)
    info = read_meta(model)
    kind = info["kind"]
    if kind not in SOURCE_KINDS:
        source = (info.get("meta") or {}).get("params", {}).get("source")
        hint = f" (its source is {source})" if source else ""
        raise DistillError(f"{model}: is a {kind!r} model, already compressed; compress an fp32 "
                           f"{' or '.join(SOURCE_KINDS)} model folder instead{hint}")
    return load_model(model)


def output_folder(model: str | Path, out: str | Path | None, suffix: str) -> Path:
    """``out``, or ``MODEL-suffix`` beside the source; never the source folder itself."""
    model = Path(model)
    out = Path(out) if out is not None else model.with_name(f"{model.name}-{suffix}")
    if out.resolve() == model.resolve():
        raise DistillError(f"--out {out}: is the source model folder; choose another folder")
    return out


def derived_meta(source: Tagger, model: str | Path, method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The source's meta (so prediction splits and writes text the same way), with
    ``params`` describing this compression and the source's own params kept as
    ``source_params``."""
    meta = dict(source.meta)
    meta["source_params"] = meta.pop("params", None)
    meta["params"] = {"source": str(model), "method": method,
                      **{k: str(v) if isinstance(v, Path) else v for k, v in options.items()}}
    meta["source_kind"] = source.kind
    meta["compressed"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return meta


def write_model_folder(out: Path, *, kind: str, source: Tagger, meta: dict[str, Any],
                       write_weights: Callable[[Path], None]) -> Path:
    """Write a compressed model folder atomically: the weights (by ``write_weights``),
    the source's featurizer files (tokenizer or vocabulary) and ``distill.json`` with
    the source's config, so the source architecture can be rebuilt without its weights."""
    with atomic_dir(out) as tmp:
        write_weights(tmp)
        source.save_extra(tmp)
        write_json(tmp / META_FILE, {
            "format": FORMAT_VERSION, "kind": kind, "labels": source.labels, "config": source.config_dict(),
            "meta": meta, "saved": stamp(),
        })
    return out


def build_skeleton(folder: Path, info: dict[str, Any], device: str | torch.device | None = None) -> Tagger:
    """The source architecture of a compressed folder, featurizer loaded, weights not.

    On the ``meta`` device no weight memory is allocated: enough for featurizing
    (ONNX models); pass ``"cpu"`` for a module whose weights will be replaced.
    """
    meta = info.get("meta") or {}
    kind = meta.get("source_kind")
    if kind not in SOURCE_KINDS:
        raise DistillError(f"{folder / META_FILE}: meta 'source_kind' is {kind!r}; expected one of {', '.join(SOURCE_KINDS)}")
    cls = model_class(kind)
    with torch.device(device or "cpu"):
        model = cls.build(info["config"], info["labels"], meta, folder)
    return model.eval()


def read_weights(path: Path, kind: str, read: Callable[[str], Any]) -> Any:
    """``read(str(path))`` of a compressed ``kind`` folder's weights file, failing as
    :meth:`distill.modeling.Tagger.load` does: a missing file, or one that cannot be read
    (truncated, or from another model), is one line naming it."""
    from safetensors import SafetensorError

    if not path.exists():
        raise DistillError(f"{path}: missing; the {kind} model folder is incomplete")
    try:
        return read(str(path))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise DistillError(f"{path}: cannot be loaded ({str(e).splitlines()[0][:160]}); "
                           f"the file is truncated or from another model") from None


class CompressedTagger(nn.Module):
    """A source-architecture tagger with some layers replaced (int8, 8-bit, fp16).

    Featurizing, the forward pass and decoding are the source model's; batches are moved
    to the device the weights live on. Subclasses implement ``load``.
    """

    kind: ClassVar[str] = ""

    def __init__(self, inner: Tagger, meta: dict[str, Any]):
        super().__init__()
        self.inner = inner
        self.labels = list(inner.labels)
        self.meta = dict(meta)
        self.max_length = inner.max_length

    @property
    def device(self) -> torch.device:
        for p in self.inner.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def crf(self):
        return self.inner.crf

    def encode_words(self, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
        return self.inner.encode_words(sentences)

    def encode(self, texts: Sequence[str]) -> list[dict]:
        """A classifier source's featurizer (:meth:`distill.classify.Classifier.encode`)."""
        return self.inner.encode(texts)

    def build_feature(self, word_ids: Sequence[Sequence[int]]) -> dict[str, list[int]]:
        return self.inner.build_feature(word_ids)

    def collate(self, features: Sequence[dict]) -> dict[str, Tensor]:
        return self.inner.collate(features)

    def to_device(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        device = self.device
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}

    def forward(self, batch: dict[str, Tensor]) -> TaggerOutput:
        return self.inner(self.to_device(batch))

    def decode_batch(self, batch: dict[str, Tensor]) -> list[list[int]]:
        if isinstance(self.inner, Tagger):  # it moves the batch to its weights' device itself, once
            return self.inner.decode_batch(batch)
        with torch.inference_mode():
            return self.inner.decode_batch(self.to_device(batch))

    @classmethod
    def load(cls, folder: Path, info: dict[str, Any]) -> "CompressedTagger":
        raise NotImplementedError


# ---------------------------------------------------------------------------
# The dev sample every compressed model is checked on


def recorded_dataset(meta: dict[str, Any], keep: Callable[[str], bool]) -> dict[str, Any] | None:
    """The dataset dict a model's meta records (``params.dataset``, or a compressed folder's
    ``source_params``, through every compression), its keys that ``keep`` accepts and that
    have a value."""
    for key in ("params", "source_params"):
        params = meta.get(key) or {}
        ds = params.get("dataset")
        if isinstance(ds, dict):
            return {k: v for k, v in ds.items() if keep(k) and v is not None}
        if isinstance(params.get("source_params"), dict):  # compressed twice (e.g. pruned, then int8)
            found = recorded_dataset({"params": params["source_params"]}, keep)
            if found:
                return found
    return None


def dataset_of(meta: dict[str, Any]) -> dict[str, Any] | None:
    """``load_dataset`` kwargs of the data a model was trained on, from its meta."""
    from distill.data import load_dataset

    allowed = set(inspect.signature(load_dataset).parameters) - {"max_train", "max_dev", "max_test"}
    found = recorded_dataset(meta, allowed.__contains__)
    if found is None and meta.get("dataset") == "msra":
        return DataConfig.from_json({"name": "msra"}).to_json()
    return found


def check_dataset(meta: dict[str, Any], dataset: dict[str, Any] | None, n: int, *, items: str, model: str,
                  recorded: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict[str, Any]:
    """The data to check a compressed ``model`` ("model", "classifier") on ``n`` dev ``items``:
    ``dataset``, else what its meta records (``recorded``, e.g. :func:`dataset_of`)."""
    if n < 1:
        raise DistillError(f"--check must be >= 1 (dev {items} to check on; 0 skips the check), got {n}")
    kwargs = dataset if dataset is not None else recorded(meta)
    if kwargs is None:
        raise DistillError(f"cannot tell which data the {model} was trained on (no 'dataset' in its meta); "
                           "give --train/--dev files to check the compressed model on")
    return kwargs


def check_sentences(meta: dict[str, Any], dataset: dict[str, Any] | None, n: int) -> list[list[str]]:
    """The first ``n`` sentences of the dev split of ``dataset`` (default: the model's
    training data, from its meta); for a classifier, dev texts (:func:`quantize.classify.check_texts`)."""
    from distill.data import load_dataset

    if meta.get("task") == "classify":
        from quantize.classify import check_texts

        return check_texts(meta, dataset, n)
    ds = load_dataset(**check_dataset(meta, dataset, n, items="sentences", model="model", recorded=dataset_of))
    sentences = [s for s in ds.dev.tokens if s][:n]
    if not sentences:
        raise DistillError(f"the dev split of {ds.name} has no sentences to check the compressed model on")
    return sentences


@torch.inference_mode()
def describe_check(check: dict[str, Any] | None, precise: bool = False) -> str:
    """The saved-model message's tail for a :func:`compare` result ('' when none was made)."""
    if not check:
        return ""
    if "label_agreement" in check:
        from quantize.classify import describe_classifier_check

        return describe_classifier_check(check, precise)
    diff = f"{check['max_abs_diff']:.2e}" if precise else f"{check['max_abs_diff']:.4f}"
    return (f"; on {check['sentences']} dev sentences: max |emission diff| {diff}, "
            f"tags agree {check['tag_agreement']:.2%}")


def compare(reference: Tagger, other, sentences: Sequence[Sequence[str]], batch_size: int = 32) -> dict[str, Any]:
    """Max abs emission difference (real words only) and share of identical decoded tags
    between a PyTorch ``reference`` and a compressed model with a ``forward``; for
    classifiers, label agreement and max probability diff (:func:`quantize.classify.compare_classifiers`)."""
    from distill.features import iterate_batches, make_pieces

    if reference.meta.get("task") == "classify":
        from quantize.classify import compare_classifiers

        return compare_classifiers(reference, other, sentences, batch_size)

    pieces = make_pieces(reference, sentences)
    max_diff, same, total, same_sentences = 0.0, 0, 0, 0
    for _, batch in iterate_batches(reference, pieces, batch_size):
        ref = reference(batch)
        got = other(batch)
        mask = ref.mask
        diff = (ref.emissions.float() - got.emissions.float().to(ref.emissions.device)).abs()
        max_diff = max(max_diff, diff[mask].max().item())
        if not torch.isfinite(got.emissions[got.mask.to(got.emissions.device)]).all():
            raise DistillError("the compressed model gives non-finite emissions (overflow); it cannot be used")
        t_ref = reference.decode(ref)
        t_got = reference.decode(TaggerOutput(got.emissions.float().to(ref.emissions.device), mask))
        same += int((t_ref == t_got)[mask].sum())
        total += int(mask.sum())
        same_sentences += int(((t_ref == t_got) | ~mask).all(1).sum())
    return {"sentences": len(sentences), "pieces": len(pieces), "max_abs_diff": round(max_diff, 6),
            "tag_agreement": round(same / max(total, 1), 6),
            "identical_sentences": round(same_sentences / max(len(pieces), 1), 6)}
