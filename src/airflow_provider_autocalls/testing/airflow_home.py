"""A throw-away Airflow home for tests: its own config, SQLite database and dags folder.

Airflow reads its home once, when it is first imported, so the home must be set before that.
The ``autocalls_airflow_home`` fixture does it itself when nothing has imported Airflow yet; a
suite whose test modules import Airflow while they are collected calls :func:`isolate_airflow_home`
at the top of its ``conftest.py`` instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

#: Set to the home :func:`isolate_airflow_home` made, so later calls (and fixtures) reuse it.
MARKER_ENV = "AUTOCALLS_TEST_AIRFLOW_HOME"

_migrated: set[str] = set()


def isolated_airflow_home() -> Path | None:
    """The home :func:`isolate_airflow_home` set up in this process, if it is still in force."""
    home = os.environ.get(MARKER_ENV)
    if home and os.environ.get("AIRFLOW_HOME") == home:
        return Path(home)
    return None


def isolate_airflow_home(home: str | os.PathLike[str] | None = None) -> Path:
    """
    Point Airflow at a throw-away home: config, SQLite database and dags folder all inside it.

    Every setting that could lead elsewhere is set explicitly (a deployment's image often sets
    ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``), so tests never touch a real database or dags folder.
    Call it before anything imports Airflow; calling it again returns the same home.

    :param home: the folder to use; a new temporary folder by default.
    :return: the Airflow home.
    :raises RuntimeError: if Airflow was already imported with another home.
    """
    current = isolated_airflow_home()
    if current is not None:
        return current
    if "airflow" in sys.modules:
        raise RuntimeError(
            "Airflow was imported before its home could be isolated: Airflow reads AIRFLOW_HOME once, "
            "at import. Call airflow_provider_autocalls.testing.airflow_home.isolate_airflow_home() "
            "at the top of your conftest.py, before anything imports Airflow."
        )
    path = Path(home) if home is not None else Path(tempfile.mkdtemp(prefix="autocalls-airflow-home-"))
    path = path.resolve()
    (path / "dags").mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(path),
            "AIRFLOW_CONFIG": str(path / "airflow.cfg"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(path / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{path / 'airflow.db'}",
            MARKER_ENV: str(path),
        }
    )
    return path


def migrate_database() -> None:
    """
    Create (or upgrade) the metadata database of the isolated home, once per process.

    It runs ``airflow db migrate`` in a child process, so migrating neither imports Airflow here
    nor leaves its logging set up in the test process.
    """
    home = isolated_airflow_home()
    if home is None:
        raise RuntimeError("Call isolate_airflow_home() before migrate_database().")
    if str(home) in _migrated:
        return
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"`airflow db migrate` failed in {home}:\n{result.stdout}\n{result.stderr}")
    _migrated.add(str(home))
