"""The notes' sparse word channel: TF-IDF weighted word unigrams and bigrams, with the
vocabulary fitted on a run's ``train`` notes only.

The pretrained note encoder's token states blur exact words (a named drug, the diagnosis a
referrer guesses in shorthand, "bleeds"); a bag of n-grams keeps them. The models read it
as ``NgramBag`` (``trainer.models.common``): padded ids (0 = padding) and their weights.
"""
from __future__ import annotations

import json
import re

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

TOKEN = r"(?u)\b\w\w+\b"  # scikit-learn's default token: words of two or more characters
MAX_TERMS = 256  # n-grams kept per note (the highest weights), far above any DermSynth note


def _vectorizer(vocabulary: dict | None = None) -> TfidfVectorizer:
    return TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, token_pattern=TOKEN,
                           vocabulary=vocabulary, dtype=np.float32)


class NgramVocabulary:
    """A fitted TF-IDF vocabulary; ``size`` counts the padding id 0 (1 = no vocabulary)."""

    def __init__(self, vectorizer: TfidfVectorizer | None):
        self.vectorizer = vectorizer

    @classmethod
    def fit(cls, notes: list[str]) -> "NgramVocabulary":
        """Fitted on ``notes``; an empty vocabulary (no word in two notes) disables the channel."""
        vec = _vectorizer()
        try:
            vec.fit([n for n in notes if n.strip()])
        except ValueError:  # "empty vocabulary": nothing to learn from
            return cls(None)
        return cls(vec)

    @property
    def size(self) -> int:
        return 1 + (len(self.vectorizer.vocabulary_) if self.vectorizer is not None else 0)

    def encode(self, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """ids (n, K) int64 (column + 1; 0 pads) and TF-IDF weights (n, K) float32."""
        if self.vectorizer is None:
            return np.zeros((len(notes), 1), np.int64), np.zeros((len(notes), 1), np.float32)
        x = self.vectorizer.transform(notes).tocsr()
        k = max(1, min(MAX_TERMS, int(np.diff(x.indptr).max(initial=0))))
        ids, weights = np.zeros((len(notes), k), np.int64), np.zeros((len(notes), k), np.float32)
        for i in range(len(notes)):
            cols, vals = x.indices[x.indptr[i]:x.indptr[i + 1]], x.data[x.indptr[i]:x.indptr[i + 1]]
            keep = np.argsort(-vals, kind="stable")[:k]
            ids[i, :len(keep)], weights[i, :len(keep)] = cols[keep] + 1, vals[keep]
        return ids, weights

    def term(self, ngram_id: int) -> str:
        if not hasattr(self, "_terms"):
            self._terms = {i + 1: t for t, i in self.vectorizer.vocabulary_.items()}
        return self._terms[ngram_id]

    def to_json(self) -> str:
        if self.vectorizer is None:
            return json.dumps({"vocabulary": None})
        vocab = {t: int(i) for t, i in self.vectorizer.vocabulary_.items()}
        return json.dumps({"vocabulary": vocab, "idf": self.vectorizer.idf_.tolist()}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "NgramVocabulary":
        data = json.loads(text)
        if not data["vocabulary"]:
            return cls(None)
        vec = _vectorizer(data["vocabulary"])
        vec.idf_ = np.asarray(data["idf"], np.float32)
        return cls(vec)


def term_spans(note: str, term: str) -> list[tuple[int, int]]:
    """Character spans of each word of each occurrence of ``term`` (one or two lower-case
    words) in ``note``, found with the vectorizer's own tokenisation."""
    tokens = [(m.group().lower(), m.start(), m.end()) for m in re.finditer(TOKEN, note)]
    words = term.split(" ")
    spans = []
    for i in range(len(tokens) - len(words) + 1):
        if [t for t, _, _ in tokens[i:i + len(words)]] == words:
            spans += [(a, b) for _, a, b in tokens[i:i + len(words)]]
    return spans
