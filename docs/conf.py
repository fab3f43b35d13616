"""Sphinx configuration of the provider's documentation (``make docs`` builds it into build/docs)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# autodoc imports the modules, and importing Airflow needs a home: a throw-away one, never ~/airflow.
from airflow_provider_autocalls import __version__  # noqa: E402
from airflow_provider_autocalls.testing.airflow_home import isolate_airflow_home  # noqa: E402

isolate_airflow_home()
# Airflow 2.11 warns about its own metrics default on import; the docs publish no metrics.
os.environ.setdefault("AIRFLOW__METRICS__TIMER_UNIT_CONSISTENCY", "True")

project = "airflow-provider-autocalls"
author = "airflow-provider-autocalls contributors"
release = __version__
version = __version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "images/README*"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_mock_imports: list[str] = []

html_theme = "alabaster"
html_title = f"Autocalls provider {release}"

CHANGELOG = ROOT / "CHANGELOG.md"


def _changelog(app: object, docname: str, source: list[str]) -> None:
    """``changelog`` shows the repository's CHANGELOG.md, whenever there is one."""
    if docname == "changelog" and CHANGELOG.exists():
        source[0] = CHANGELOG.read_text()


def setup(app: object) -> None:
    app.connect("source-read", _changelog)  # type: ignore[attr-defined]


# README sections included in pages link to README anchors ("#at-most-once") that the site names otherwise.
suppress_warnings = ["myst.xref_missing"]
