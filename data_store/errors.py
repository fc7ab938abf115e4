"""Store errors a user can act on, and how both command lines print them: one line, no
traceback, with what to do about a full disk or a read-only file."""
from __future__ import annotations

import sys
from pathlib import Path


class StoreError(RuntimeError):
    """A store problem a user can act on (missing file, locked, read-only, disk full)."""


def hint(text: str) -> str | None:
    """What to do about an error whose message is ``text``, when we recognise it."""
    if "No space left" in text or "Disk quota" in text or "File too large" in text:
        return ("the disk is full (or over its quota). Free space and run the command again; "
                "everything written before this command is kept")
    if "Read-only file system" in text or "Permission denied" in text or "read-only" in text.lower():
        return ("the file or its folder is read-only. Use a writable location (--db, --out, --cache-dir) or "
                "ask for write access; the dashboard and reports only need to read the store")
    return None


def explain(path: Path, exc: Exception, action: str) -> str:
    cause = hint(str(exc))
    return f"Cannot {action} the store {path}: {str(exc).strip()}." + (f" Likely cause: {cause}." if cause else "")


def cli_message(exc: BaseException) -> str:
    """The one-line error a command prints: the message, plus what to do for a full disk or read-only file."""
    text = str(exc)
    cause = None if isinstance(exc, StoreError) else hint(text)
    return text + (f" ({cause}.)" if cause else "")


def run_command(func, args) -> int:
    """Run one CLI command: a user-facing error prints one line, no traceback, and returns 2."""
    try:
        return func(args)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {cli_message(exc)}", file=sys.stderr)
        return 2
