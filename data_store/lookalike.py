"""Names that look the same but are spelled differently ("clinic_A" with a Cyrillic A,
a full-width letter, a zero-width space, another letter case).

Two spellings of one clinic would split it in the audit and in the held-out split, so
ingest keeps the most used spelling and rejects the rows of the others with the reason.
Homoglyphs come from Unicode's confusables data (the confusable_homoglyphs package).
"""
from __future__ import annotations

import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable

from confusable_homoglyphs import confusables


def skeleton(text: str) -> str:
    """A key equal for strings a reader could not tell apart: NFKC, invisible characters
    dropped, whitespace collapsed, case folded, non-Latin homoglyphs replaced by their Latin letter."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in text if unicodedata.category(c) not in ("Cf", "Cc", "Mn"))
    text = " ".join(text.split()).casefold()
    if text.isascii():
        return text
    found = confusables.is_confusable(text, greedy=True, preferred_aliases=["latin"]) or []
    swap = {}
    for hit in found:
        latin = [h["c"] for h in hit["homoglyphs"] if h["c"].isascii()]
        if latin and not hit["character"].isascii():  # ASCII stays itself: "1" and "l" are different clinics
            swap[hit["character"]] = latin[0]
    return "".join(swap.get(c, c) for c in text).casefold()


def canonical_spellings(values: Iterable[str]) -> dict[str, str]:
    """Each distinct value -> the spelling its look-alike group uses most (ties: ASCII, then sorted)."""
    counts = Counter(values)
    groups: dict[str, list[str]] = defaultdict(list)
    for value in counts:
        groups[skeleton(value)].append(value)
    out = {}
    for members in groups.values():
        best = sorted(members, key=lambda v: (-counts[v], not v.isascii(), v))[0]
        out.update({m: best for m in members})
    return out


def difference(raw: str, canonical: str) -> str:
    """How ``raw`` differs from ``canonical``, for a rejection message."""
    odd = [f"{c!r} U+{ord(c):04X} {unicodedata.name(c, 'unnamed')}" for c in dict.fromkeys(raw)
           if not c.isascii() or unicodedata.category(c) in ("Cf", "Cc")]
    if odd:
        return "it holds " + ", ".join(odd[:3]) + (" and more" if len(odd) > 3 else "")
    return "letter case or spacing"
