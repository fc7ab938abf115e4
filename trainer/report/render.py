"""Write a handoff ``Document`` as Markdown, as an A4 PDF (fpdf2) and as slice tables.

Figures are drawn once as PNG (Pillow) and used by both. The PDF uses the core
Helvetica font, so text is kept to Latin-1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from trainer.explain.figures import load_font
from trainer.report.document import Document, Figure, Paragraph, Table

COLOURS = {"all": (60, 60, 60), "I-II": (230, 159, 0), "III-IV": (0, 114, 178), "V-VI": (213, 94, 0),
           "unknown": (150, 150, 150)}


def line_chart(data: pd.DataFrame, x: str, y: str, title: str, x_label: str, y_label: str,
               diagonal: bool = False, size=(900, 560)) -> Image.Image:
    """Lines of ``y`` against ``x`` per ``slice_value`` on [0, 1] x [0, 1]."""
    w, h = size
    left, top, right, bottom = 80, 50, w - 170, h - 70
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = load_font(18)
    to_px = lambda vx, vy: (left + vx * (right - left), bottom - vy * (bottom - top))  # noqa: E731
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    for t in np.linspace(0, 1, 6):
        draw.text((to_px(t, 0)[0] - 12, bottom + 8), f"{t:.1f}", fill="black", font=font)
        draw.text((left - 45, to_px(0, t)[1] - 10), f"{t:.1f}", fill="black", font=font)
    if diagonal:
        draw.line([to_px(0, 0), to_px(1, 1)], fill=(170, 170, 170), width=2)
    for i, (group, g) in enumerate(data.groupby("slice_value", sort=True)):
        g = g.dropna(subset=[x, y]).sort_values(x)
        colour = COLOURS.get(group, (0, 0, 0))
        if len(g) > 1:
            draw.line([to_px(a, b) for a, b in zip(g[x], g[y])], fill=colour, width=3)
        for a, b in zip(g[x], g[y]):
            cx, cy = to_px(a, b)
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
        draw.line([(right + 15, top + 20 + 28 * i), (right + 45, top + 20 + 28 * i)], fill=colour, width=4)
        draw.text((right + 52, top + 10 + 28 * i), str(group), fill="black", font=font)
    draw.text((left, 10), title, fill="black", font=font)
    draw.text(((left + right) / 2 - 80, h - 35), x_label, fill="black", font=font)
    draw.text((left + 10, top + 8), f"y: {y_label}", fill=(90, 90, 90), font=font)
    return img


def figures(doc: Document, out: Path, example: Image.Image | None) -> dict[str, Path]:
    """Draw the document's charts (and the example case, when there is one) as PNG into ``out``."""
    paths = {}
    for key, spec in doc.figures.items():
        if spec.kind == "reliability":
            img = line_chart(spec.data[spec.data["n"] > 0], "confidence", "accuracy", spec.title,
                             "predicted probability", "observed accuracy", diagonal=True)
        else:
            img = line_chart(spec.data, "coverage", "risk", spec.title, "share of cases not deferred",
                             "error rate of those")
        paths[key] = out / f"figure_{key}.png"
        img.save(paths[key])
    if example is not None:
        paths["example"] = out / "figure_example.png"
        example.save(paths["example"])
    return paths


def to_markdown(doc: Document, paths: dict[str, Path]) -> str:
    lines = [f"# {doc.title}", ""]
    for section in doc.sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            match block:
                case Paragraph(text):
                    lines += [text, ""]
                case Table(frame, caption):
                    lines += [f"*{caption}*", "", frame.to_markdown(index=False), ""]
                case Figure(key, caption) if key in paths:
                    lines += [f"![{caption}]({paths[key].name})", "", f"*{caption}*", ""]
    return "\n".join(lines)


def _latin1(text: str) -> str:
    return str(text).encode("latin-1", "replace").decode("latin-1")


def to_pdf(doc: Document, paths: dict[str, Path], out: Path) -> int:
    """Write the PDF; returns its page count."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    pdf.set_margins(15, 15, 15)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)
    pdf.multi_cell(0, 7, _latin1(doc.title), new_x="LMARGIN", new_y="NEXT", align="L")
    for section in doc.sections:
        if section.new_page:
            pdf.add_page()
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", 12)
        pdf.multi_cell(0, 6, _latin1(section.title), new_x="LMARGIN", new_y="NEXT")
        for block in section.blocks:
            match block:
                case Paragraph(text):
                    pdf.set_font("Helvetica", "", 9.5)
                    pdf.multi_cell(0, 4.8, _latin1(text), new_x="LMARGIN", new_y="NEXT")
                    pdf.ln(1.5)
                case Table(frame, caption):
                    _table(pdf, frame, caption)
                case Figure(key, caption) if key in paths:
                    _figure(pdf, paths[key], caption, width=170 if key == "example" else 120)
    pdf.output(str(out))
    return pdf.pages_count


def _table(pdf, df: pd.DataFrame, caption: str) -> None:
    pdf.set_font("Helvetica", "I", 8.5)
    pdf.multi_cell(0, 4.2, _latin1(caption), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 7.5 if len(df.columns) > 4 else 8.5)
    with pdf.table(line_height=4.2, text_align="LEFT") as table:
        table.row([_latin1(c) for c in df.columns])
        for row in df.astype(str).itertuples(index=False):
            table.row([_latin1(v) for v in row])
    pdf.ln(2)


def _figure(pdf, path: Path, caption: str, width: float) -> None:
    if pdf.get_y() + width * 0.65 > 280:
        pdf.add_page()
    pdf.image(str(path), w=width)
    pdf.set_font("Helvetica", "I", 8.5)
    pdf.multi_cell(0, 4.2, _latin1(caption), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)
