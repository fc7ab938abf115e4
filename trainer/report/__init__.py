"""The clinical handoff document: ``content.py`` chooses what it says from a run's tables,
``document.py`` is its shape (sections of typed blocks), ``render.py`` writes it as
Markdown and A4 PDF. ``python -m trainer report`` (``trainer.commands.report``) reads the
store and writes the files."""
