import pandas as pd
import pytest

from trainer.evaluation.selection import select_model


def _rows(values: dict[tuple[str, str], float]) -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "split": s, "slice": "overall", "slice_value": "all", "metric": "macro_f1",
                          "value": v, "ci_low": v - 0.05, "ci_high": v + 0.05} for (m, s), v in values.items()])


def test_the_choice_reads_val_only():
    metrics = _rows({("a", "val"): 0.70, ("b", "val"): 0.80, ("a", "test"): 0.99, ("b", "test"): 0.10})
    chosen = select_model(metrics)
    assert chosen.model == "b" and chosen.estimate == pytest.approx(0.80)
    assert chosen.evidence["model"].tolist() == ["b", "a"]
    assert select_model(metrics, candidates=["a"]).model == "a"


def test_ties_are_broken_by_name_and_no_val_is_refused():
    assert select_model(_rows({("b", "val"): 0.8, ("a", "val"): 0.8})).model == "a"
    with pytest.raises(ValueError, match="no macro F1 on val"):
        select_model(_rows({("a", "test"): 0.8}))
