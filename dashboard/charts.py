"""Pure Altair builders: a DataFrame in, a chart out. No reads, no maths."""
from __future__ import annotations

import altair as alt
import pandas as pd

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9"]  # safe for colour-blind readers
# Charts whose height counts rows: the width fits the page, the height is the plot's own (axes
# and titles come on top). Streamlit's default ("fit" both ways) would squeeze the plot into
# the height, and a discrete alt.Step height makes Vega drop the fit with a console warning.
FIT_WIDTH = alt.AutoSizeParams(type="fit-x", contains="padding")
NATURAL = alt.AutoSizeParams(type="pad")  # a chart of fixed cells: its own size, axes around it


def count_bars(df: pd.DataFrame, category: str, title: str, sort: str = "count") -> alt.Chart:
    """Horizontal bars of ``n`` per ``category``, longest first, or in the frame's order
    (``sort="stored"``)."""
    order = df[category].tolist() if sort == "stored" else "-x"
    return (alt.Chart(df, title=title)
            .mark_bar()
            .encode(y=alt.Y(f"{category}:N", sort=order, title=None),
                    x=alt.X("n:Q", title="cases"),
                    tooltip=[alt.Tooltip(f"{category}:N"), alt.Tooltip("n:Q", format=",")])
            .properties(height=22 * max(len(df), 1), autosize=FIT_WIDTH))


def interval_bars(df: pd.DataFrame, y: str, title: str, x_title: str = "value", fmt: str = ".3f") -> alt.Chart:
    """Points with 95% interval bars: columns ``y``, value, ci_low, ci_high (and too_small,
    flagged); the axis in ``fmt`` (".1%" for a rate, as the tables show it)."""
    base = alt.Chart(df, title=title).encode(y=alt.Y(f"{y}:N", title=None, sort=None))
    bars = base.mark_rule().encode(x=alt.X("ci_low:Q", title=x_title, scale=alt.Scale(zero=False),
                                           axis=alt.Axis(format=fmt)), x2="ci_high:Q")
    colour = alt.condition("datum.flagged", alt.value("#c0392b"), alt.value("#2c3e50")) if "flagged" in df else \
        alt.value("#2c3e50")
    points = base.mark_point(filled=True, size=60).encode(
        x="value:Q", color=colour,
        tooltip=[alt.Tooltip(f"{y}:N")] + [alt.Tooltip(f"{c}:Q", format=".3f") for c in ("value", "ci_low", "ci_high")
                                          if c in df] + ([alt.Tooltip("n:Q")] if "n" in df else []))
    return (bars + points).properties(height=24 * max(df[y].nunique(), 1), autosize=FIT_WIDTH)


def reliability(df: pd.DataFrame, title: str, colour: str = "kind", min_bin: int = 10) -> alt.Chart:
    """Reliability diagram from stored bins: mean confidence against observed frequency. Each
    point is sized by its cases; bins under ``min_bin`` cases are faded and left off the line
    (one or two cases swing between 0 and 1)."""
    df = df[df["n"] > 0].assign(enough=lambda d: d["n"] >= min_bin)
    diagonal = alt.Chart(pd.DataFrame({"x": [0, 1], "y": [0, 1]})).mark_line(strokeDash=[4, 4], color="gray").encode(
        x="x:Q", y="y:Q")
    base = alt.Chart(df, title=title).encode(
        x=alt.X("confidence:Q", title="predicted probability", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("accuracy:Q", title="observed frequency", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color(f"{colour}:N", title=None, scale=alt.Scale(range=OKABE_ITO)))
    line = base.transform_filter("datum.enough").mark_line()
    points = base.mark_circle().encode(
        size=alt.Size("n:Q", title="cases in bin", scale=alt.Scale(range=[15, 300])),
        opacity=alt.condition("datum.enough", alt.value(0.9), alt.value(0.25)),
        tooltip=["bin:Q", alt.Tooltip("confidence:Q", format=".3f"), alt.Tooltip("accuracy:Q", format=".3f"), "n:Q"])
    return (diagonal + line + points).properties(height=300)


def risk_coverage(df: pd.DataFrame, coverage: float | None, title: str) -> alt.Chart:
    """Error rate among kept cases against coverage, per group, with the current operating point."""
    lines = alt.Chart(df, title=title).mark_line().encode(
        x=alt.X("coverage:Q", title="coverage (share not deferred)"), y=alt.Y("risk:Q", title="error rate of kept"),
        color=alt.Color("slice_value:N", title=None, scale=alt.Scale(range=OKABE_ITO)))
    if coverage is None:
        return lines.properties(height=300)
    rule = alt.Chart(pd.DataFrame({"coverage": [coverage]})).mark_rule(color="black").encode(x="coverage:Q")
    return (lines + rule).properties(height=300)


def confusion(df: pd.DataFrame, title: str) -> alt.Chart:
    """Heatmap of counts: columns true, predicted, n. Each cell has a fixed size, so every row
    and label shows; the size is a number (Vega drops fit sizes on a discrete step and warns)."""
    k = max(df["true"].nunique(), 1)
    labels = alt.Axis(labelAngle=-40, labelOverlap=False)  # every category named, none hidden
    base = alt.Chart(df, title=title).encode(x=alt.X("predicted:N", sort=None, axis=labels),
                                             y=alt.Y("true:N", sort=None))
    return (base.mark_rect().encode(color=alt.Color("n:Q", scale=alt.Scale(scheme="blues"), legend=None))
            + base.mark_text(fontSize=13).encode(text="n:Q")).properties(height=40 * k, width=78 * k,
                                                                          autosize=NATURAL)


def probabilities(df: pd.DataFrame) -> alt.Chart:
    return alt.Chart(df).mark_bar().encode(x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1])),
                                           y=alt.Y("class:N", sort=None, title=None)).properties(
        height=22 * len(df), autosize=FIT_WIDTH)


def learning_curve(df: pd.DataFrame, title: str) -> alt.Chart:
    """A promise over k labelled local cases: the mean over draws (line), the 2.5-97.5%
    spread over draws (band), and the target (dashed rule). Columns k, value, ci_low,
    ci_high, target, slice_value (one line per group)."""
    base = alt.Chart(df, title=title).encode(x=alt.X("k:Q", title="labelled local cases (k)"))
    colour = alt.Scale(range=OKABE_ITO)
    band = base.mark_area(opacity=0.15).encode(y=alt.Y("ci_low:Q", title=None), y2="ci_high:Q",
                                              color=alt.Color("slice_value:N", scale=colour, title=None))
    line = base.mark_line(point=True).encode(
        y=alt.Y("value:Q", scale=alt.Scale(zero=False)), color=alt.Color("slice_value:N", title=None, scale=colour),
        tooltip=["k:Q", "slice_value:N", alt.Tooltip("value:Q", format=".3f"), alt.Tooltip("ci_low:Q", format=".3f"),
                 alt.Tooltip("ci_high:Q", format=".3f"), "holds:N"])
    target = alt.Chart(df.dropna(subset=["target"]).drop_duplicates("target")).mark_rule(
        strokeDash=[6, 4], color="black").encode(y="target:Q")
    return (line + band + target).properties(height=220)  # the line first: its marks make the legend


def heatmap(df: pd.DataFrame, value: str, title: str, order: list[str], fmt: str = ".0%") -> alt.Chart:
    """Skin type x category cells of ``value`` (columns fitzpatrick, category, split, n),
    one panel per split in ``order``; cells under 30 cases faded, the value and n in each cell."""
    base = alt.Chart(df).encode(x=alt.X("category:N", title=None, axis=alt.Axis(labelAngle=-40, labelOverlap=False)),
                                y=alt.Y("fitzpatrick:N", title="Fitzpatrick type", sort=None))
    cells = base.mark_rect().encode(
        color=alt.Color(f"{value}:Q", scale=alt.Scale(scheme="blues"), legend=alt.Legend(format=fmt), title=None),
        opacity=alt.condition("datum.n >= 30", alt.value(1.0), alt.value(0.3)),
        tooltip=["split:N", "fitzpatrick:N", "category:N", alt.Tooltip(f"{value}:Q", format=fmt), "n:Q"])
    text = base.mark_text(fontSize=10).encode(text=alt.Text("label:N"))
    k = max(df["category"].nunique(), 1)
    return (cells + text).properties(width=64 * k, height=30 * max(df["fitzpatrick"].nunique(), 1)).facet(
        column=alt.Column("split:N", title=None, sort=order), title=title)
