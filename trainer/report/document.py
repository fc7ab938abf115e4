"""The handoff document as data: sections of typed blocks, which ``render.py`` writes as
Markdown and as an A4 PDF."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame
    caption: str


@dataclass(frozen=True)
class Figure:
    key: str  # a key of Document.figures, or "example" (the explained case)
    caption: str


@dataclass
class Section:
    title: str
    blocks: list[Paragraph | Table | Figure] = field(default_factory=list)
    new_page: bool = False  # start the section on a new PDF page

    def p(self, text: str) -> None:
        self.blocks.append(Paragraph(text))

    def table(self, frame: pd.DataFrame, caption: str) -> None:
        self.blocks.append(Table(frame, caption))

    def figure(self, key: str, caption: str) -> None:
        self.blocks.append(Figure(key, caption))


@dataclass(frozen=True)
class ChartSpec:
    """A line chart of the document: ``kind`` is reliability or risk_coverage."""

    kind: str
    title: str
    data: pd.DataFrame


@dataclass
class Document:
    title: str
    model: str  # the model the document is about
    sections: list[Section]
    figures: dict[str, ChartSpec]
    slices: dict[str, pd.DataFrame]  # exported slice tables, by file stem
