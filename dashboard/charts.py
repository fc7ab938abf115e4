"""Pure Altair builders: a DataFrame in, a chart out. No reads, no maths."""
from __future__ import annotations

import altair as alt
import pandas as pd


def count_bars(df: pd.DataFrame, category: str, title: str, sort: list[str] | None = None) -> alt.Chart:
    """Horizontal bars of ``n`` per ``category``."""
    return (alt.Chart(df, title=title)
            .mark_bar()
            .encode(y=alt.Y(f"{category}:N", sort=sort or "-x", title=None),
                    x=alt.X("n:Q", title="cases"),
                    tooltip=[alt.Tooltip(f"{category}:N"), alt.Tooltip("n:Q", format=",")])
            .properties(height=alt.Step(22)))
