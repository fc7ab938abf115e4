"""The handoff document as data: sections of typed blocks, which ``render.py`` writes as
Markdown and as an A4 PDF."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

MIN_BIN = 10  # reliability bins with fewer cases are not drawn (a 1-case bin reads 0 or 1)


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame
    caption: str
    emphasis: bool = False  # set larger (the bottom line)


@dataclass(frozen=True)
class Figure:
    key: str  # a key of Document.figures, or "example" (the explained case)
    caption: str


@dataclass
class Section:
    title: str
    blocks: list[Paragraph | Table | Figure] = field(default_factory=list)
    new_page: bool = False  # start the section on a new PDF page (each of the five pages starts with one)

    def p(self, text: str) -> None:
        self.blocks.append(Paragraph(text))

    def table(self, frame: pd.DataFrame, caption: str, emphasis: bool = False) -> None:
        self.blocks.append(Table(frame, caption, emphasis))

    def figure(self, key: str, caption: str) -> None:
        self.blocks.append(Figure(key, caption))


@dataclass(frozen=True)
class ChartSpec:
    """A line chart of the document: ``kind`` is reliability or risk_coverage."""

    kind: str
    title: str
    data: pd.DataFrame
    marker: float | None = None  # an x to mark (the operating point's share of cases kept)


@dataclass
class Document:
    title: str
    model: str  # the model the document is about
    sections: list[Section]
    figures: dict[str, ChartSpec]
    slices: dict[str, pd.DataFrame]  # exported slice tables, by file stem
    footer: str = ""  # printed on every page beside its number
    trace: object = None  # the Trace of every number written (trace.py)
