"""Referral notes written from a case's clinical vignette in a clinic's style.

A vignette holds what the referrer knows (age, sex, site, duration, evolution, symptoms,
history, a suspected diagnosis); the note mentions a random subset of it in 1 to 4
sentences. A "vague" note mentions only who, where and how long, so the text alone
cannot tell the category.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STYLES = ("prose", "terse", "shorthand")

# Each entry: style -> list of templates. {a} age, {s} sex word, {site}, {dur}.
OPENERS = {
    "prose": ["{A}-year-old {s} with a skin lesion on the {site} for {dur}.",
              "I would be grateful if you could see this {A}-year-old {s} with a lesion on the {site}, present for {dur}.",
              "This {A}-year-old {s} presents with a rash on the {site}, present for {dur}."],
    "terse": ["{A}{S}, {site} lesion x {dur}.", "{A}yo {S}, {site} lesion, {dur}."],
    "shorthand": ["{S}{A} {site} lsn {dur}", "pt {S}{A}, {site}, hx {dur}"],
}
PHRASES = {
    "new": {"prose": "It appeared recently.", "terse": "New.", "shorthand": "new"},
    "growing": {"prose": "It has been growing steadily.", "terse": "Enlarging.", "shorthand": "enlarging"},
    "changing": {"prose": "It has changed in shape and colour.", "terse": "Changing shape/colour.",
                 "shorthand": "chg shape+col"},
    "spreading": {"prose": "It is spreading quickly.", "terse": "Spreading.", "shorthand": "spreading"},
    "stable": {"prose": "It has not changed in years.", "terse": "Unchanged.", "shorthand": "no chg"},
    "fever": {"prose": "{P} has had a fever and feels unwell.", "terse": "Febrile.", "shorthand": "pyrexial"},
    "no_fever": {"prose": "No fever.", "terse": "Apyrexial.", "shorthand": "afebrile"},
    "pain": {"prose": "It is painful and tender.", "terse": "Painful.", "shorthand": "painful ++"},
    "itch": {"prose": "It is very itchy.", "terse": "Itchy.", "shorthand": "pruritic"},
    "bleeding": {"prose": "It has bled on a few occasions.", "terse": "Bleeds on contact.", "shorthand": "bleeds"},
    "history": {"prose": "Relevant history: {h}.", "terse": "PMH: {h}.", "shorthand": "hx {h}"},
    "guess": {"prose": "I suspect {g}.", "terse": "?{g}.", "shorthand": "q {g}"},
}
DURATION_WORDS = {"days": ("{n} days", (2, 6)), "weeks": ("{n} weeks", (2, 8)),
                  "months": ("{n} months", (2, 11)), "years": ("{n} years", (2, 15))}


@dataclass(frozen=True)
class Vignette:
    age: int
    sex: str  # "F" / "M"
    site: str
    duration: str  # days / weeks / months / years
    evolution: str
    fever: bool
    pain: bool
    itch: bool
    bleeding: bool
    history: tuple[str, ...]
    guess: str | None  # referrer's suspected diagnosis, display name


def write_note(rng: np.random.Generator, v: Vignette, style: str, vague: bool) -> str:
    """Render a vignette as 1 to 4 sentences in ``style``."""
    unit, (lo, hi) = DURATION_WORDS[v.duration]
    dur = unit.format(n=int(rng.integers(lo, hi + 1)))
    if style == "shorthand":
        dur = dur.replace(" days", "d").replace(" weeks", "wk").replace(" months", "mo").replace(" years", "yr")
    sex_word = {"F": "woman", "M": "man"}[v.sex]
    opener = rng.choice(OPENERS[style]).format(A=v.age, s=sex_word, S=v.sex, site=v.site, dur=dur)
    if vague:
        return opener[0].upper() + opener[1:]

    keys = [v.evolution, "fever" if v.fever else "no_fever"]
    keys += [k for k, on in (("pain", v.pain), ("itch", v.itch), ("bleeding", v.bleeding)) if on]
    if v.history:
        keys.append("history")
    # The referrer mentions each fact with some probability; the guess only sometimes.
    keys = [k for k in keys if rng.random() < 0.75]
    if v.guess:
        keys.append("guess")
    clauses = [PHRASES[k][style].format(P="She" if v.sex == "F" else "He",
                                        h=", ".join(v.history), g=v.guess) for k in keys]
    sentences = [opener]
    # Pack the clauses into at most three more sentences, so a note has 1 to 4.
    n_more = min(3, len(clauses))
    for group in (np.array_split(np.asarray(clauses, dtype=object), n_more) if n_more else []):
        sentences.append(_join(list(group), style))
    text = ("; " if style == "shorthand" else " ").join(sentences)
    return text[0].upper() + text[1:]


def _join(clauses: list[str], style: str) -> str:
    """Clauses as one sentence: 'Itchy.' + 'No fever.' -> 'Itchy, no fever.'"""
    if style == "shorthand":
        return " ".join(clauses)
    parts = [c.rstrip(".") for c in clauses]
    parts = [parts[0]] + [p if p.startswith("I ") else p[0].lower() + p[1:] for p in parts[1:]]
    return ", ".join(parts) + "."
