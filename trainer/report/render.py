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
from trainer.report.document import MIN_BIN, Document, Figure, Paragraph, Table

COLOURS = {"all": (60, 60, 60), "I-II": (230, 159, 0), "III-IV": (0, 114, 178), "V-VI": (213, 94, 0),
           "unknown": (150, 150, 150), "training clinics": (0, 158, 115), "new clinic": (204, 121, 167)}


def line_chart(data: pd.DataFrame, x: str, y: str, title: str, x_label: str, y_label: str,
               diagonal: bool = False, size=(900, 600), counts: str | None = None,
               marker: float | None = None) -> Image.Image:
    """Lines of ``y`` against ``x`` per ``slice_value`` on [0, 1] x [0, 1]; ``counts``: a column
    written beside each point; ``marker``: an x marked by a dashed vertical line."""
    w, h = size
    left, top, right, bottom = 110, 50, w - 170, h - 80
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
    if marker is not None:
        mx = to_px(marker, 0)[0]
        for y0 in range(top, bottom, 14):
            draw.line([(mx, y0), (mx, min(y0 + 7, bottom))], fill=(0, 0, 0), width=2)
        draw.text((mx + 6, top + 6), "operating point", fill="black", font=font)
    for i, (group, g) in enumerate(data.groupby("slice_value", sort=True)):
        g = g.dropna(subset=[x, y]).sort_values(x)
        colour = COLOURS.get(group, (0, 0, 0))
        if len(g) > 1:
            draw.line([to_px(a, b) for a, b in zip(g[x], g[y])], fill=colour, width=3)
        small = load_font(14)
        for a, b, n in zip(g[x], g[y], g[counts] if counts else [None] * len(g)):
            cx, cy = to_px(a, b)
            draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=colour)
            if n is not None:
                draw.text((cx + 5, cy - 18), str(int(n)), fill=colour, font=small)
        draw.line([(right + 15, top + 20 + 28 * i), (right + 45, top + 20 + 28 * i)], fill=colour, width=4)
        draw.text((right + 52, top + 10 + 28 * i), str(group), fill="black", font=font)
    draw.text((left, 10), title, fill="black", font=font)
    draw.text(((left + right) / 2 - 8 * len(x_label) / 2, h - 40), x_label, fill="black", font=font)
    label = Image.new("RGB", (bottom - top, 26), "white")  # the y label, outside the plot, read bottom-up
    ImageDraw.Draw(label).text(((bottom - top) / 2 - 8 * len(y_label) / 2, 2), y_label, fill="black", font=font)
    img.paste(label.rotate(90, expand=True), (8, top))
    return img


def figures(doc: Document, out: Path, example: Image.Image | None) -> dict[str, Path]:
    """Draw the document's charts (and the example case, when there is one) as PNG into ``out``."""
    paths = {}
    for key, spec in doc.figures.items():
        if spec.kind == "reliability":
            img = line_chart(spec.data[spec.data["n"] >= MIN_BIN], "confidence", "accuracy", spec.title,
                             "stated confidence", "observed accuracy", diagonal=True, counts="n")
        else:
            img = line_chart(spec.data, "coverage", "risk", spec.title, "share of cases the model keeps",
                             "error rate of those", marker=spec.marker)
        paths[key] = out / f"figure_{key}.png"
        img.save(paths[key])
    if example is not None:
        paths["example"] = out / "figure_example.png"
        example.save(paths["example"])
    return paths


def to_markdown(doc: Document, paths: dict[str, Path]) -> str:
    lines = [f"# {doc.title}", "", f"*{doc.footer}*", ""] if doc.footer else [f"# {doc.title}", ""]
    for section in doc.sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            match block:
                case Paragraph(text):
                    lines += [text, ""]
                case Table(frame, caption, _):
                    lines += [f"*{caption}*", "", frame.to_markdown(index=False), ""]
                case Figure(key, caption) if key in paths:
                    lines += [f"![{caption}]({paths[key].name})", "", f"*{caption}*", ""]
    return "\n".join(lines)


def _latin1(text: str) -> str:
    return str(text).encode("latin-1", "replace").decode("latin-1")


def to_pdf(doc: Document, paths: dict[str, Path], out: Path) -> int:
    """Write the PDF (A4, a footer and "page i of n" on every page); returns its page count."""
    from fpdf import FPDF

    class Pages(FPDF):
        def footer(self):
            self.set_y(-11)
            self.set_font("Helvetica", "", 7)
            self.set_text_color(90, 90, 90)
            self.cell(0, 4, _latin1(doc.footer), align="L")
            self.set_x(self.l_margin)
            self.cell(0, 4, f"page {self.page_no()} of {{nb}}", align="R")
            self.set_text_color(0, 0, 0)

    pdf = Pages(format="A4")
    pdf.set_auto_page_break(True, margin=14)
    pdf.set_margins(14, 12, 14)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 13)
    pdf.multi_cell(0, 6, _latin1(doc.title), new_x="LMARGIN", new_y="NEXT", align="L")
    for section in doc.sections:
        if section.new_page:
            pdf.add_page()
        pdf.ln(1.5)
        pdf.set_font("Helvetica", "B", 11 if section.new_page else 9.5)
        pdf.multi_cell(0, 5, _latin1(section.title), new_x="LMARGIN", new_y="NEXT")
        for block in section.blocks:
            match block:
                case Paragraph(text):  # the first page, the summary, is set larger
                    pdf.set_font("Helvetica", "", 10 if pdf.page_no() == 1 else 8.5)
                    pdf.multi_cell(0, 4.6 if pdf.page_no() == 1 else 3.9, _latin1(text), new_x="LMARGIN",
                                   new_y="NEXT")
                    pdf.ln(1)
                case Table(frame, caption, emphasis):
                    _table(pdf, frame, caption, emphasis)
                case Figure(key, caption) if key in paths:
                    _figure(pdf, paths[key], caption, width=FIGURE_WIDTH.get(key, 95))
    pdf.output(str(out))
    return pdf.pages_count


FIGURE_WIDTH = {"example": 150}  # mm; the charts 95


def _table(pdf, df: pd.DataFrame, caption: str, emphasis: bool = False) -> None:
    pdf.set_font("Helvetica", "BI" if emphasis else "I", 9 if emphasis else 7.5)
    pdf.multi_cell(0, 4.4 if emphasis else 3.5, _latin1(caption), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10 if emphasis else 7 if len(df.columns) > 4 else 7.5)
    widths = [min(max([len(str(c)) / 2, *df[c].astype(str).str.len()]), 60) + 4 for c in df.columns]  # by content
    with pdf.table(line_height=5 if emphasis else 3.4, text_align="LEFT", padding=1 if emphasis else 0.6,
                   col_widths=widths) as table:
        table.row([_latin1(c) for c in df.columns])
        for row in df.astype(str).itertuples(index=False):
            table.row([_latin1(v) for v in row])
    pdf.ln(1.5)


def _figure(pdf, path: Path, caption: str, width: float) -> None:
    """The image at the left margin, its caption beside it when there is room, else below."""
    with Image.open(path) as img:
        height = width * img.height / img.width
    if pdf.get_y() + height > pdf.h - pdf.b_margin:
        pdf.add_page()
    x, y = pdf.l_margin, pdf.get_y()
    pdf.image(str(path), x=x, y=y, w=width)
    pdf.set_font("Helvetica", "I", 7.5)
    room = pdf.w - pdf.r_margin - (x + width + 4)
    if room > 40:
        pdf.set_xy(x + width + 4, y + 4)
        pdf.multi_cell(room, 3.5, _latin1(caption), new_x="LMARGIN", new_y="NEXT")
        pdf.set_y(max(pdf.get_y(), y + height) + 1)
    else:
        pdf.set_y(y + height)
        pdf.multi_cell(0, 3.5, _latin1(caption), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)
