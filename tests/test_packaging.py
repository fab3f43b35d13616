"""What a release needs, kept from drifting: one version, its changelog entry, the licence, py.typed.

The built wheel itself (installed next to each supported Airflow) is checked by `make dist-check`.
"""

from __future__ import annotations

import re
import tomllib
from importlib.resources import files
from pathlib import Path

from airflow_provider_autocalls import __version__

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_written_only_in_the_package():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["hatch"]["version"]["path"] == "src/airflow_provider_autocalls/__init__.py"


def test_the_version_is_semver():
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?", __version__)


def test_the_changelog_has_an_unreleased_section_then_this_version_first():
    headings = re.findall(r"^## (.+)$", (ROOT / "CHANGELOG.md").read_text(), flags=re.MULTILINE)
    assert headings[0] == "Unreleased"
    released = re.fullmatch(r"(\S+) - \d{4}-\d{2}-\d{2}", headings[1])
    assert released, f"the first released entry is {headings[1]!r}, expected '<version> - YYYY-MM-DD'"
    assert released.group(1) == __version__


def test_license_is_the_apache_2_text_that_pyproject_names():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_the_package_is_marked_typed():
    assert files("airflow_provider_autocalls").joinpath("py.typed").is_file()
