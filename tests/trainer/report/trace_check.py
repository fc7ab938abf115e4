"""Reading the handoff document's numbers back from the store, with this test suite's own
code: each traced number from the row and column its trace names, the text holding no
number without a trace (shared by the report tests)."""
import re

import numpy as np
import pandas as pd

from data_store.store import TriageStore
from trainer.evaluation.adaptation import CURVE_DRAWS, ECE_TARGET, TOLERANCE, smallest_k
from trainer.report import safety
from trainer.report.document import MIN_BIN, Paragraph, Table

FIXED = {"the unit of the bottom line": "100", "the level of every interval": "95%"}
NUMBER = re.compile(r"(?<![\w.\-=])-?\d[\d,]*(?:\.\d+)?%?(?![\w])|(?<==)\d+")


def store_reader(db, run_id):
    """Each table the document cites, read again from the store by this test's own code."""
    with TriageStore(db, read_only=True) as store:
        run = store.read_run(run_id)
        tables = {t: store.read_table(t, run_id) for t in ("metrics", "policies", "conformal", "comparisons")}
        tables["adaptation_curve"] = store.read_curve(run_id)
        tables["shift"] = store.read_shift(run_id)
        tables["corrections"] = store.read_corrections(run_id)
        cases = store.read_cases(run["dataset"])
        urgent = list(store.read_dataset(run["dataset"])["urgent_classes"])
        preds = store.read_predictions(run_id)
    held = cases["clinic"] == run["heldout_clinic"]
    group = cases["fitzpatrick"].map({1: "I-II", 2: "I-II", 3: "III-IV", 4: "III-IV", 5: "V-VI", 6: "V-VI"})
    roman = cases["fitzpatrick"].map({1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"})
    rows = [("dataset", "referrals", len(cases), 1.0), ("dataset", "clinics", cases["clinic"].nunique(), 1.0)]
    for by, values in (("fitzpatrick", roman.fillna("unknown")), ("clinic", cases["clinic"]),
                       ("label", cases["label"])):
        rows += [(by, v, n, n / len(cases)) for v, n in values.value_counts().items()]
    for where, mask in (("training clinics", ~held), ("held-out clinic", held)):
        g, types = group[mask].fillna("unknown"), roman[mask].fillna("unknown")
        rows += [(f"skin-tone group at the {where}", v, n, n / mask.sum()) for v, n in g.value_counts().items()]
        rows += [(f"skin type at the {where}", v, n, n / mask.sum()) for v, n in types.value_counts().items()]
        n_urgent = cases.loc[mask, "label"].isin(urgent).sum()
        rows.append(("urgent share", where, n_urgent, n_urgent / mask.sum()))
    tables["case_counts"] = pd.DataFrame(rows, columns=["by", "value", "n", "share"])
    tables["deferral_cases"] = preds[preds["split"] == "test"]  # replayed scores must equal the stored ones
    return lambda name: tables[name]


def text_of(doc) -> str:
    texts = [b.text if isinstance(b, Paragraph) else b.caption for s in doc.sections for b in s.blocks
             if isinstance(b, (Paragraph, Table))]
    texts += [" ".join(map(str, row)) for s in doc.sections for b in s.blocks if isinstance(b, Table)
              for row in [b.frame.columns, *b.frame.astype(str).itertuples(index=False)]]
    return " ".join(texts)


FORMAT = {"p3": lambda x: f"{x:.3f}", "pct": lambda x: f"{100 * x:.1f}%", "int": lambda x: f"{int(x):,}",
          "k": lambda x: str(int(x)), "neg": lambda x: f"{-x:.3f}", "per100": lambda x: f"{x:.0f}"}


def _constants(d: dict) -> dict:
    m = d["metrics"]
    curve = d["curve"]
    first = smallest_k(curve[curve["select_method"] == "random"]) if len(curve) else {}
    out = {"len(classes)": len(d["info"]["classes"]), "MIN_BIN": MIN_BIN, "CURVE_DRAWS": CURVE_DRAWS,
           "ECE_TARGET": ECE_TARGET, "TOLERANCE urgent": TOLERANCE["urgent_caught"][0],
           "TOLERANCE accuracy": TOLERANCE["accepted_accuracy"], "AUDIT_SAMPLE": safety.AUDIT_SAMPLE,
           "DEFER_DRIFT": safety.DEFER_DRIFT,
           "len(models)": int(((m.split == "val") & (m.slice == "overall") & (m.metric == "macro_f1")).sum()),
           "largest smallest k": max([k for k in first.values() if pd.notna(k)], default=None)}
    return out | {f"smallest k: {name}": k for name, k in first.items()}


def _value(source, d, store_tables, constants):
    key = dict(source.key)
    if source.table == "config":
        value = getattr(d["config"], key["field"])
    elif source.table == "constant":
        value = constants[key["name"]]
    elif source.table == "deferral_reasons":
        cases = d["cases"]
        if key["reason"] == "missed urgent":
            value = {"n": cases["missed"].sum()}[source.column]
        else:
            deferred = cases[cases["deferred"]]
            n = (deferred["reason"] == key["reason"]).sum()
            value = {"n": n, "share": n / len(deferred)}[source.column]
    else:
        frame = store_tables(source.table)
        rows = frame[np.logical_and.reduce([frame[c].astype(str) == str(v) for c, v in key.items()])]
        assert len(rows) == 1, (source, len(rows))
        value = rows[source.column].iloc[0]
    return 1 - value if source.complement else value


def check_trace(doc, d: dict, store_tables) -> None:
    """Each number the document writes reads back, from the row and column its trace names,
    as the same text; the text holds no number without a trace."""
    constants = _constants(d)
    for record in doc.trace.records:
        if record.form == "fixed":
            assert FIXED[dict(record.sources[0].key)["why"]] == record.text
            continue
        values = [_value(s, d, store_tables, constants) for s in record.sources]
        expected = 100 * np.prod(values) if record.form == "per100" else values[0]
        assert ("n/a" if pd.isna(expected) else FORMAT[record.form](expected)) == record.text, record
    text = re.sub(r"\d{8}-\d{6}-[\w-]+", "RUN", text_of(doc))  # run ids (this run's, a control run's)
    written = {r.text for r in doc.trace.records}
    untraced = [n for n in NUMBER.findall(text) if n not in written]
    assert not untraced, untraced
    assert all(r.text in text for r in doc.trace.records)
