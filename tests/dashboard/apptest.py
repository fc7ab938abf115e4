"""AppTest helpers shared by the page tests: open a page of a run, read a query parameter."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGES = Path(__file__).resolve().parents[2] / "dashboard" / "pages"


def open_page(name: str, store, run_id: str, **params) -> AppTest:
    """A page of the dashboard at run ``run_id`` with ``params`` in its URL (not run yet)."""
    at = AppTest.from_file(str(PAGES / name), default_timeout=120)
    at.query_params["run"] = run_id
    for k, v in params.items():
        at.query_params[k] = v
    return at


def param(at: AppTest, name: str) -> str:
    """A query parameter the page set (AppTest may hold it as a one-item list)."""
    value = at.query_params[name]
    return value[0] if isinstance(value, list) else value
