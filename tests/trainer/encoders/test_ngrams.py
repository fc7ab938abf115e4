import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from trainer.encoders.ngrams import NgramVocabulary, term_spans

TRAIN = ["painful lesion on the arm, bleeds", "itchy lesion on the leg", "painful rash on the arm",
         "itchy rash, bleeds on contact", ""]


def test_weights_are_scikit_learns_tfidf_of_the_train_vocabulary():
    vocab = NgramVocabulary.fit(TRAIN)
    reference = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit([n for n in TRAIN if n])
    notes = ["painful itchy lesion on the arm", "pyrexial, q melanoma", ""]
    ids, weights = vocab.encode(notes)
    dense = reference.transform(notes).toarray()
    for i in range(len(notes)):
        got = np.zeros(dense.shape[1], np.float32)
        got[ids[i][ids[i] > 0] - 1] = weights[i][ids[i] > 0]
        np.testing.assert_allclose(got, dense[i], rtol=1e-6)
    assert (ids[1] == 0).all() and (ids[2] == 0).all()  # words never seen twice in train: no channel
    assert vocab.size == len(reference.vocabulary_) + 1


def test_a_saved_vocabulary_encodes_the_same():
    vocab = NgramVocabulary.fit(TRAIN)
    again = NgramVocabulary.from_json(vocab.to_json())
    notes = ["itchy rash on the arm, bleeds", "painful"]
    for a, b in zip(vocab.encode(notes), again.encode(notes)):
        np.testing.assert_array_equal(a, b)


def test_no_shared_word_disables_the_channel():
    vocab = NgramVocabulary.fit(["alpha", "beta", ""])
    assert vocab.size == 1
    ids, weights = vocab.encode(["alpha beta"])
    assert not ids.any() and not weights.any()
    assert NgramVocabulary.from_json(vocab.to_json()).size == 1


@pytest.mark.parametrize("term, expected", [("arm", ["arm"]), ("on the", ["on", "the"]),
                                            ("bleeds", ["bleeds", "Bleeds"]), ("the arm", ["the", "arm"]),
                                            ("arm bleeds", ["arm", "bleeds"]), ("leg", [])])
def test_term_spans_find_each_word_of_each_occurrence(term, expected):
    note = "Painful lesion on the arm, bleeds; Bleeds."
    assert [note[a:b] for a, b in term_spans(note, term)] == expected
