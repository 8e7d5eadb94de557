"""``distill quantize onnx`` / ``onnx-int8``: the whole tagger in one ONNX file.

The graph takes the model's own inputs (BERT: ``input_ids``, ``attention_mask``,
``word_index``, ``word_mask``; BiLSTM: ``input_ids``, ``word_mask``), any batch size and
length, and returns ``emissions`` (B, W, K) and the Viterbi-decoded ``tags`` (B, W),
-1 at padding: a bare ``onnxruntime.InferenceSession`` tags text with no distill code.
What the graph holds and how it is exported: :mod:`quantize.onnx_graph`; how distill
runs it (:class:`OnnxTagger`): :mod:`quantize.onnx_session`.

* Export is checked at once against the PyTorch model on a dev sample: emissions within
  ``EMISSION_TOLERANCE`` and decoded tags identical on every sentence, or it fails with
  the mismatch. For ``onnx-int8`` (ONNX Runtime dynamic int8 of the checked graph) the
  in-graph Viterbi must equal :meth:`CRF.decode` on the graph's own emissions; the
  emission difference to fp32 and the tag agreement are recorded in the folder's meta.
* Text classifiers (meta ``"task": "classify"``) export a graph of their own, returning
  class ``probabilities`` and the argmax ``label``: :mod:`quantize.classify`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from distill.errors import DistillError
from distill.modeling import Tagger, TaggerOutput
from quantize import check_sentences, describe_check, derived_meta, load_source, output_folder, write_model_folder
from quantize.onnx_graph import OPSET, OUTPUTS, export_graph, input_names
from quantize.onnx_session import ONNX_FILE, OnnxTagger, make_session, run_session

EMISSION_TOLERANCE = 1e-3  # max abs emission diff, ONNX fp32 vs PyTorch, at real words


# ---------------------------------------------------------------------------
# Checking an export against PyTorch


@torch.inference_mode()
def check_export(source: Tagger, session, sentences: Sequence[Sequence[str]], exact: bool,
                 batch_size: int = 32) -> dict[str, Any]:
    """Run ``session`` and ``source`` on the same batches (varied lengths, padded).

    Always: the graph's tags equal :meth:`CRF.decode` of the graph's own emissions.
    ``exact`` (fp32 export): emissions within ``EMISSION_TOLERANCE`` of PyTorch and tags
    identical to PyTorch's on every sentence. Raises :class:`DistillError` naming the
    first mismatch; returns the measured numbers.
    """
    from distill.features import iterate_batches, make_pieces

    # The dev batches (varied sizes and lengths, padded), then one one-word sentence
    # alone: a graph that fixed a size at export fails here.
    pieces = make_pieces(source, [*sentences, sentences[0][:1]])
    batches = list(iterate_batches(source, pieces[:-1], batch_size))
    batches.append(([len(pieces) - 1], source.collate([pieces[-1].feature])))
    max_diff, same, total, same_pieces = 0.0, 0, 0, 0
    for idx, batch in batches:
        ref = source(batch)
        ref_tags = source.decode(ref)
        try:
            emissions, tags = run_session(session, batch)
        except Exception as e:  # onnxruntime's own error types
            shape = tuple(batch["word_mask"].shape)
            raise DistillError(f"ONNX check failed: the graph cannot run a batch of shape {shape}: "
                               f"{str(e).splitlines()[0][:200]}") from None
        emissions, tags = torch.from_numpy(emissions), torch.from_numpy(tags)
        mask = ref.mask
        own = source.decode(TaggerOutput(emissions, mask))
        bad = ((own != tags) & mask).any(1)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise DistillError(f"ONNX check failed: the in-graph Viterbi differs from CRF.decode on sentence "
                               f"{pieces[idx[i]].sentence} ({int(mask[i].sum())} words)")
        diff = (emissions - ref.emissions).abs()[mask]
        max_diff = max(max_diff, diff.max().item())
        agree = (tags == ref_tags) | ~mask
        if exact:
            if max_diff > EMISSION_TOLERANCE:
                raise DistillError(f"ONNX check failed: emissions differ from PyTorch by {max_diff:.2e} "
                                   f"(tolerance {EMISSION_TOLERANCE:.0e})")
            if not agree.all():
                i = int((~agree.all(1)).nonzero()[0])
                raise DistillError(f"ONNX check failed: tags differ from PyTorch on sentence {pieces[idx[i]].sentence} "
                                   f"({int((~agree[i]).sum())} of {int(mask[i].sum())} words)")
        same += int((agree & mask).sum())
        total += int(mask.sum())
        same_pieces += int(agree.all(1).sum())
    return {"sentences": len(sentences), "pieces": len(pieces), "max_abs_diff": round(max_diff, 6),
            "tolerance": EMISSION_TOLERANCE if exact else None, "tag_agreement": round(same / max(total, 1), 6),
            "identical_sentences": round(same_pieces / max(len(pieces), 1), 6)}


# ---------------------------------------------------------------------------
# The commands' plain functions


def _example_batch(source: Tagger, sentences: Sequence[Sequence[str]]) -> dict[str, Tensor]:
    from distill.features import make_pieces

    pieces = make_pieces(source, sentences[:4])
    return source.collate([p.feature for p in pieces[:4]])


def _export(model: Path, out: Path | None, int8: bool, dataset: dict | None, check: int, per_channel: bool,
            quiet: bool) -> Path:
    method = "onnx-int8" if int8 else "onnx"
    out = output_folder(model, out, method)
    source = load_source(model)
    if check < 1:
        raise DistillError(f"--check must be >= 1 (an export is always checked), got {check}")
    if source.meta.get("task") == "classify":
        from quantize.classify import export_classifier

        return export_classifier(source, model, out, int8=int8, dataset=dataset, check=check,
                                 per_channel=per_channel, quiet=quiet)
    sentences = check_sentences(source.meta, dataset, check)
    return write_onnx_folder(
        source, model, out, int8=int8, per_channel=per_channel, quiet=quiet,
        export=lambda path: export_graph(source, path, _example_batch(source, sentences)),
        check=lambda session, exact: check_export(source, session, sentences, exact=exact),
        # the decoding is baked into the graph
        extra_meta={"decoding": "constrained" if source.allowed_transitions() is not None else "free",
                    "inputs": list(input_names(source)), "outputs": list(OUTPUTS)})


def write_onnx_folder(source, model: Path, out: Path, *, int8: bool, per_channel: bool, quiet: bool,
                      export: Callable[[Path], None], check: Callable[[Any, bool], dict[str, Any]],
                      extra_meta: dict[str, Any], finish: Callable[[Path], None] | None = None,
                      what: str = "model") -> Path:
    """Write the ONNX model folder ``out`` of ``source`` (loaded from ``model``), tagger or
    classifier: ``export(path)`` writes the fp32 graph; ``check(session, exact)`` compares a
    session of it with PyTorch (exactly for fp32); for int8 the checked graph is quantized
    (ONNX Runtime dynamic int8) and checked again, the fp32 check kept as ``check_fp32``;
    ``finish(path)`` last touches the final file. ``what`` names it in the saved message."""
    method = "onnx-int8" if int8 else "onnx"
    options: dict[str, Any] = {"opset": OPSET, "exporter": f"torch.onnx dynamo (torch {torch.__version__.split('+')[0]})"}
    if int8:
        options.update(per_channel=per_channel, backend="onnxruntime.quantization.quantize_dynamic (QInt8 weights)")
    meta = derived_meta(source, model, method, options)
    meta.update(extra_meta)

    def write(tmp: Path) -> None:
        fp32 = tmp / (ONNX_FILE if not int8 else "model.fp32.onnx")
        export(fp32)
        meta["check"] = check(make_session(fp32, "cpu"), True)
        if int8:
            meta["check_fp32"] = meta.pop("check")
            _quantize_onnx(fp32, tmp / ONNX_FILE, per_channel)
            fp32.unlink()
            meta["check"] = check(make_session(tmp / ONNX_FILE, "cpu"), False)
        if finish is not None:
            finish(tmp / ONNX_FILE)
        meta["onnx_bytes"] = (tmp / ONNX_FILE).stat().st_size

    # a classifier's folder has the same kind; loading dispatches on its meta task
    write_model_folder(out, kind=OnnxTagger.kind, source=source, meta=meta, write_weights=write)
    if not quiet:
        print(f"{method} {what} saved to {out} ({meta['onnx_bytes'] / 2**20:.1f} MiB)"
              f"{describe_check(meta['check'], precise=True)}")
    return out


def _quantize_onnx(src: Path, dst: Path, per_channel: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import logging

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs pre-processing advice at WARNING
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel)


def export_onnx(*, model: Path, out: Path | None = None, dataset: dict | None = None, check: int = 200,
                quiet: bool = False) -> Path:
    """Export ``model`` with its CRF decoding to ``out/model.onnx`` (default ``MODEL-onnx``),
    checked against PyTorch on ``check`` dev sentences."""
    return _export(model, out, False, dataset, check, False, quiet)


def export_onnx_int8(*, model: Path, out: Path | None = None, dataset: dict | None = None, check: int = 200,
                     per_channel: bool = True, quiet: bool = False) -> Path:
    """Export ``model`` as above, then quantize its weights to int8 with ONNX Runtime
    (dynamic: activations quantized at run time); default folder ``MODEL-onnx-int8``."""
    return _export(model, out, True, dataset, check, per_channel, quiet)
