"""The bad-input corpus: one manifest row per kind of bad (or merely odd) input, with the
outcome the ingest documents for it, plus whole files that must be refused.

``build_rows(root, ...)`` writes the image files and returns the rows; ``write_manifest``
writes them (after any other rows) as a CSV with CRLF line ends, a BOM, quoted multi-line
fields and raw invalid UTF-8 bytes. Outcomes: ("accept", flags) or ("reject", reason).
Everything is generated here, at test time, from fixed seeds.
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

HEADER = ["case_id", "patient_id", "clinic", "image_path", "note", "label", "fitzpatrick", "age"]
BAD_UTF8 = "@@BAD_UTF8@@"  # replaced by the bytes b"caf\xe9 \xff" when the CSV is written


@dataclass(frozen=True)
class Row:
    kind: str
    fields: list[str]  # in HEADER order
    expect: tuple[str, object]  # ("accept", [flags]) or ("reject", reason)

    @property
    def case_id(self) -> str:
        return self.fields[0]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 60000, height: int = 60000) -> bytes:
    """A tiny valid PNG whose header declares an enormous size."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 4))
            + _chunk(b"IEND", b""))


def _with_chunk(png: bytes, chunk: bytes) -> bytes:
    return png[:33] + chunk + png[33:]  # after the signature (8) and IHDR (25)


def write_images(img: Path, outside: Path) -> None:
    """Every image file the rows refer to, in ``img`` (plus one file outside the root)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(img / "good.jpg")
    for i in range(8):
        Image.fromarray(np.roll(rgb, i + 1, axis=0)).save(img / f"good{i}.png")
    Image.fromarray(rgb[:, :, 0]).save(img / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((24, 24), 128, np.uint8)])).save(img / "rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(img / "cmyk.jpg")
    Image.fromarray((np.arange(576, dtype=np.uint16).reshape(24, 24) * 100)).save(img / "deep16.png")
    Image.fromarray(rgb).convert("P").save(img / "palette.gif")
    frames = [Image.fromarray(np.roll(rgb, i, axis=1)) for i in range(3)]
    frames[0].save(img / "animated.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(rgb[:1, :1]).save(img / "one_pixel.png")
    Image.fromarray(rgb).save(img / "really_png.jpg", format="PNG")  # extension says JPEG, bytes say PNG
    (img / "empty.jpg").write_bytes(b"")
    (img / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    (img / "notes.jpg").write_text("this is a text file, not a photo")
    (img / "document.jpg").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << >> endobj\n")
    good = (img / "good.jpg").read_bytes()
    (img / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (img / "bomb.png").write_bytes(bomb_png())
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    png = buf.getvalue()
    # 3 MiB of text metadata in a valid photo: the photo is used, the text never read into the store.
    (img / "text_chunk.png").write_bytes(_with_chunk(png, _chunk(b"tEXt", b"Comment\x00" + b"A" * (3 << 20))))
    # A compressed text chunk that would inflate to 200 MiB: a decompression bomb in the metadata.
    (img / "ztxt_bomb.png").write_bytes(_with_chunk(png, _chunk(b"zTXt", b"Comment\x00\x00"
                                                                + zlib.compress(b"A" * (200 << 20)))))
    (img / "folder.jpg").mkdir()
    Image.fromarray(rgb).save(outside)
    (img / "link.jpg").symlink_to(outside)


def build_rows(root: Path, classes: tuple[str, str] = ("benign", "malignant"),
               clinics: tuple[str, str, str] = ("A", "B", "C")) -> list[Row]:
    """Write the corpus's files under ``root`` and return its rows. ``classes`` are two class
    names of the dataset (the first non-urgent); ``clinics`` three of its clinics."""
    img = root / "img"
    img.mkdir(parents=True, exist_ok=True)
    outside = root.parent / f"{root.name}_secret.jpg"
    write_images(img, outside)
    b, m = classes
    A, B, C = clinics
    cyrillic = {"a": "\u0430", "c": "\u0441", "e": "\u0435", "o": "\u043e", "p": "\u0440", "x": "\u0445",
                "A": "\u0410", "C": "\u0421", "E": "\u0415", "O": "\u041e", "P": "\u0420", "X": "\u0425"}
    at = next(i for i, ch in enumerate(A) if ch in cyrillic)  # the clinic's first letter with a Cyrillic twin
    lookalike = A[:at] + cyrillic[A[at]] + A[at + 1:]
    rows: list[Row] = []

    def row(kind, cid, pid, clinic, path, note, label, fitz, expect, age="50"):
        rows.append(Row(kind, [cid, pid, clinic, path, note, label, fitz, age], expect))

    ok, rej = "accept", "reject"
    # Kept as they are, or converted the one documented way.
    row("good row", "bi-ok", "bp1", A, "img/good.jpg", "Itchy red patch.", b, "2", (ok, []))
    row("grayscale image", "bi-gray", "bp2", A, "img/gray.png", "note", b, "III", (ok, ["image_converted:L"]))
    row("image with alpha", "bi-rgba", "bp3", A, "img/rgba.png", "note", m, "type IV", (ok, ["image_converted:RGBA"]))
    row("CMYK JPEG", "bi-cmyk", "bp4", B, "img/cmyk.jpg", "note", b, "Fitzpatrick 5", (ok, ["image_converted:CMYK"]))
    row("16-bit image", "bi-deep", "bp5", B, "img/deep16.png", "note", b, "VI", (ok, ["image_converted:I;16"]))
    row("palette GIF", "bi-gif", "bp6", B, "img/palette.gif", "note", b, "2", (ok, ["image_converted:P"]))
    row("animated GIF (first frame)", "bi-anim", "bp7", B, "img/animated.gif", "note", b, "2",
        (ok, ["image_converted:P"]))
    row("1x1 pixel image", "bi-pixel", "bp8", B, "img/one_pixel.png", "note", b, "2", (ok, []))
    row("PNG named .jpg", "bi-pngjpg", "bp9", B, "img/really_png.jpg", "note", b, "2", (ok, []))
    row("PNG with a 3 MiB text chunk", "bi-textchunk", "bp10", B, "img/text_chunk.png", "note", b, "2", (ok, []))
    row("empty note", "bi-nonote", "bp11", B, "img/good0.png", "", b, "1", (ok, ["empty_note"]))
    row("Fitzpatrick out of range", "bi-fitz7", "bp12", B, "img/good1.png", "n", b, "7",
        (ok, ["fitzpatrick_unparsed:7"]))
    row("Fitzpatrick blank", "bi-fitzblank", "bp13", B, "img/good2.png", "n", b, "", (ok, ["fitzpatrick_unknown"]))
    row("Fitzpatrick free text", "bi-fitztext", "bp14", B, "img/good3.png", "n", b, "purple",
        (ok, ["fitzpatrick_unparsed:purple"]))
    row("Fitzpatrick NaN", "bi-fitznan", "bp15", A, "img/good4.png", "n", b, "NaN", (ok, ["fitzpatrick_unparsed:NaN"]))
    row("Fitzpatrick infinity", "bi-fitzinf", "bp16", A, "img/good5.png", "n", m, "inf",
        (ok, ["fitzpatrick_unparsed:inf"]))
    row("age NaN", "bi-agenan", "bp17", A, "img/good6.png", "n", b, "2", (ok, []), age="NaN")
    row("age -infinity", "bi-ageinf", "bp18", A, "img/good7.png", "n", b, "2", (ok, []), age="-inf")
    row("label with trailing spaces and tab", "bi-labelspace", "bp19", C, "img/good4.png", "n", f"  {b} \t", "3",
        (ok, []))
    row("label in another case", "bi-labelcase", "bp20", C, "img/good5.png", "n", m.upper(), "3", (ok, []))
    row("multi-line note with quotes and commas", "bi-multiline", "bp21", C, "img/good2.png",
        'Line one,\r\nline "two".', m, "4", (ok, []))
    row("note with HTML, script and Markdown", "bi-html", "bp22", C, "img/good6.png",
        '<script>alert(1)</script> **bold** [x](javascript:alert(2)) <img src=x onerror=alert(3)>', b, "2", (ok, []))
    row("note with a NUL and right-to-left override", "bi-control", "bp23", C, "img/good7.png",
        "red\x00patch \u202eevil\u202c", b, "2", (ok, []))
    row("case id holding SQL", "bi-sql'; DROP TABLE cases; --", "bp24", C, "img/good3.png", "n", b, "2", (ok, []))
    # Rejected, each with its reason.
    row("image file missing", "bi-missing", "bp30", A, "img/nope.jpg", "n", b, "2", (rej, "image_missing"))
    row("image path is a folder", "bi-folder", "bp31", A, "img/folder.jpg", "n", b, "2", (rej, "image_missing"))
    row("Windows path separators", "bi-winpath", "bp32", A, "img\\good.jpg", "n", b, "2", (rej, "image_missing"))
    row("image path is a URL", "bi-url", "bp33", A, "https://example.org/x.jpg", "n", b, "2", (rej, "image_missing"))
    row("zero-byte image", "bi-zero", "bp34", A, "img/empty.jpg", "n", b, "2", (rej, "image_empty"))
    row("corrupt JPEG", "bi-corrupt", "bp35", A, "img/corrupt.jpg", "n", b, "2", (rej, "image_unreadable"))
    row("text file named .jpg", "bi-textfile", "bp36", A, "img/notes.jpg", "n", b, "2", (rej, "image_unreadable"))
    row("PDF named .jpg (wrong signature)", "bi-pdf", "bp37", A, "img/document.jpg", "n", b, "2",
        (rej, "image_unreadable"))
    row("truncated JPEG", "bi-trunc", "bp38", A, "img/truncated.jpg", "n", b, "2", (rej, "image_corrupt"))
    row("PNG whose text chunk inflates to 200 MiB", "bi-ztxt", "bp39", A, "img/ztxt_bomb.png", "n", b, "2",
        (rej, "image_corrupt"))
    row("decompression bomb (60000x60000)", "bi-bomb", "bp40", A, "img/bomb.png", "n", b, "2",
        (rej, "image_too_many_pixels"))
    row("path with ..", "bi-dotdot", "bp41", A, f"../{outside.name}", "n", b, "2", (rej, "image_outside_root"))
    row("absolute path outside the root", "bi-abs", "bp42", A, str(outside), "n", b, "2", (rej, "image_outside_root"))
    row("symlink out of the root", "bi-symlink", "bp43", A, "img/link.jpg", "n", b, "2", (rej, "image_outside_root"))
    row("note over 10,000 characters", "bi-long", "bp44", A, "img/good.jpg", "x" * 100_000, b, "2",
        (rej, "note_too_long"))
    row("row over 1 MiB", "bi-huge", "bp45", A, "img/good.jpg", "y" * (2 << 20), b, "2", (rej, "row_too_long"))
    row("label not a class", "bi-unknownlabel", "bp46", A, "img/good.jpg", "n", "unsure", "2", (rej, "label_unknown"))
    row("label with a Cyrillic look-alike letter", "bi-labellook", "bp47", A, "img/good.jpg", "n",
        b.replace("e", "\u0435").replace("a", "\u0430").replace("o", "\u043e"), "2", (rej, "label_lookalike"))
    row("label empty", "bi-nolabel", "bp48", A, "img/good.jpg", "n", "", "2", (rej, "label_missing"))
    row("duplicate case id", "bi-ok", "bp49", A, "img/good0.png", "n", b, "2", (rej, "duplicate_case_id"))
    row("one image, two labels (1)", "bi-twin1", "bp50", C, "img/good1.png", "n", b, "2", (rej, "label_conflict"))
    row("one image, two labels (2)", "bi-twin2", "bp50", C, "img/good1.png", "n", m, "2", (rej, "label_conflict"))
    row("patient id empty", "bi-nopatient", "", C, "img/good.jpg", "n", b, "2", (rej, "patient_id_missing"))
    row("patient id only spaces", "bi-spacepatient", "   ", C, "img/good.jpg", "n", b, "2", (rej, "patient_id_missing"))
    row("clinic empty", "bi-noclinic", "bp53", "", "img/good.jpg", "n", b, "2", (rej, "clinic_missing"))
    row("clinic with a look-alike character", "bi-clinlook", "bp54", lookalike, "img/good.jpg", "n", b, "2",
        (rej, "clinic_lookalike"))
    row("clinic in full-width letters", "bi-clinwide", "bp55", A.translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)}),
        "img/good.jpg", "n", b, "2", (rej, "clinic_lookalike"))
    row("clinic with a zero-width space", "bi-clinzw", "bp56", A[:1] + "\u200b" + A[1:], "img/good.jpg", "n", b, "2",
        (rej, "clinic_lookalike"))
    row("invalid UTF-8 in the note", "bi-badutf8", "bp57", C, "img/good.jpg", BAD_UTF8, b, "2",
        (rej, "note_invalid_utf8"))
    return rows


def _cell(v: str) -> str:
    return '"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\r\n') else v


def write_manifest(path: Path, rows: list[Row], before: list[list[str]] = (), columns: list[str] = HEADER) -> None:
    """``before`` (good rows, in ``columns`` order) then the corpus rows, as one CSV."""
    extra = columns[len(HEADER):]
    lines = [",".join(columns)] + [",".join(_cell(v) for v in fields) for fields in before]
    lines += [",".join(_cell(v) for v in r.fields + [""] * len(extra)) for r in rows]
    data = ("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8").replace(BAD_UTF8.encode(), b"caf\xe9 \xff")
    path.write_bytes(data)


# Whole files that cannot be a manifest: refused before anything is written, with a message.
def unusable_files(folder: Path) -> list[tuple[str, Path, str]]:
    """(kind, file, the message's pattern) for every unusable manifest file."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []

    def add(kind: str, name: str, data: bytes, pattern: str) -> None:
        (folder / name).write_bytes(data)
        out.append((kind, folder / name, pattern))

    head = ",".join(HEADER).encode()
    add("empty file", "empty.csv", b"", "Cannot read the manifest|no data rows")
    add("header only", "header.csv", head + b"\n", "no data rows")
    add("required columns missing", "cols.csv", b"case_id,image_path,note\n1,a.jpg,hi\n",
        r"lacks required column\(s\) \['patient_id', 'clinic', 'label'\]")
    add("a column twice after aliases", "twice.csv", head + b",image\n" + b"a,p,A,x.jpg,n,l,2,5,y.jpg\n",
        "appear twice")
    add("a photo passed as the manifest", "photo.csv", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
        "lacks required column|Cannot read the manifest")
    add("spreadsheet", "m.xlsx", b"PK\x03\x04", "Unsupported manifest type")
    add("corrupt Parquet", "m.parquet", b"PAR1 not really", "Cannot read the manifest")
    add("a quote never closed", "quote.csv", head + b'\nq1,p,A,img/good.jpg,"open quote,b,2,5\n',
        "Cannot read the manifest|rows parsed")
    add("header over 1 MiB", "wide.csv", head + b"," + b"z" * (2 << 20) + b"\n", "header line is over")
    add("broken JSON line", "m.jsonl", b'{"case_id": "a", "patient_id": \n', "Cannot read the manifest")
    return out
