"""trainer.evaluation.metrics against scikit-learn, torchmetrics and netcal on random inputs."""
import numpy as np
import pytest
import torch
from netcal.metrics import ECE
from sklearn import metrics as skm
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

from trainer.evaluation import metrics as M


def _random(seed: int, n: int = 500, k: int = 4, sharp: float = 1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) * 2 * sharp
    logits[np.arange(n), y] += rng.normal(1.0, 1.0, n)  # better than chance, imperfectly calibrated
    p = np.exp(logits - logits.max(1, keepdims=True))
    return y, p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_metrics_match_sklearn(seed):
    y, p = _random(seed)
    pred = p.argmax(1)
    assert M.accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
    assert M.macro_f1(y, pred, 4) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert M.balanced_accuracy(y, pred, 4) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    np.testing.assert_allclose(M.per_class_recall(y, pred, 4), skm.recall_score(y, pred, average=None))
    np.testing.assert_array_equal(M.confusion_matrix(y, pred, 4), skm.confusion_matrix(y, pred, labels=range(4)))


def test_macro_f1_counts_only_present_classes_like_sklearn():
    y, pred = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])  # classes 2 and 3 never appear
    assert M.macro_f1(y, pred, 4) == pytest.approx(skm.f1_score(y, pred, average="macro"))


@pytest.mark.parametrize("seed", [0, 1])
def test_probability_metrics_match_sklearn(seed):
    y, p = _random(seed)
    assert M.nll(y, p) == pytest.approx(skm.log_loss(y, p, labels=range(4)))
    assert M.brier(y, p) == pytest.approx(skm.brier_score_loss(y, p, labels=range(4), scale_by_half=False))
    assert M.auroc_ovr(y, p) == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", labels=range(4)))
    wrong = p.argmax(1) != y
    assert M.binary_auroc(-p.max(1), wrong) == pytest.approx(skm.roc_auc_score(wrong, -p.max(1)))


@pytest.mark.parametrize("seed,sharp", [(0, 1.0), (1, 3.0), (2, 0.3)])
@pytest.mark.parametrize("n_bins", [10, 15])
def test_ece_matches_torchmetrics(seed, sharp, n_bins):
    y, p = _random(seed, sharp=sharp)
    ref = multiclass_calibration_error(torch.tensor(p), torch.tensor(y), num_classes=4, n_bins=n_bins, norm="l1")
    assert M.ece(y, p, n_bins) == pytest.approx(float(ref), abs=1e-6)
    classwise = np.mean([float(binary_calibration_error(torch.tensor(p[:, k]), torch.tensor((y == k).astype(int)),
                                                        n_bins=n_bins)) for k in range(4)])
    assert M.classwise_ece(y, p, n_bins) == pytest.approx(classwise, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_matches_netcal_equal_width_and_adaptive(seed):
    y, p = _random(seed)
    assert M.ece(y, p) == pytest.approx(ECE(bins=15).measure(p, y), abs=1e-6)
    assert M.adaptive_ece(y, p) == pytest.approx(ECE(bins=15, equal_intervals=False).measure(p, y), abs=1e-6)


def test_perfectly_calibrated_scores_have_small_ece():
    rng = np.random.default_rng(0)
    score = rng.random(200_000)
    event = rng.random(200_000) < score
    assert M.binary_ece(score, event) < 0.005
    assert M.binary_ece(np.full(1000, 0.9), np.zeros(1000, bool)) == pytest.approx(0.9)


def _naive_curves(correct, confidence):
    order = np.argsort(-confidence, kind="stable")
    c = correct[order]
    risks = [np.mean(~c[:k]) for k in range(1, len(c) + 1)]
    generalized = [np.sum(~c[:k]) / len(c) for k in range(1, len(c) + 1)]
    return np.mean(risks), np.mean(generalized)


@pytest.mark.parametrize("seed", [0, 1])
def test_aurc_and_augrc(seed):
    y, p = _random(seed, n=300)
    correct, conf = p.argmax(1) == y, p.max(1)
    aurc, augrc = _naive_curves(correct, conf)
    assert M.aurc(correct, conf) == pytest.approx(aurc)
    assert M.augrc(correct, conf) == pytest.approx(augrc)
    # AUGRC's closed form (Traub et al., 2024) through scikit-learn's AUROC of confidence for correctness:
    acc, err, n = correct.mean(), 1 - correct.mean(), len(correct)
    auroc = skm.roc_auc_score(correct, conf)
    assert M.augrc(correct, conf) == pytest.approx(acc * err * (1 - auroc) + err**2 / 2 + err / (2 * n))


def test_bad_probabilities_are_refused():
    with pytest.raises(ValueError, match="outside"):
        M.ece([0, 1], [[0.5, 0.6], [0.5, 0.5]])
    with pytest.raises(ValueError, match="n_samples"):
        M.nll([0, 1, 1], [[0.5, 0.5], [0.5, 0.5]])
