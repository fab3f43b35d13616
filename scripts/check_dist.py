"""
`make dist-check`: the built wheel, installed as a user would install it, works next to each supported Airflow.

For each Airflow version given: a bare venv under ``build/dist-check/airflow-<version>`` that holds only
the wheel from ``dist/`` and ``apache-airflow==<version>`` (everything else pinned by
``constraints/airflow-<version>.txt``, so the install is reproducible and served from uv's cache when
it can be). Then, from a folder outside the checkout and with a throw-away ``AIRFLOW_HOME``:
``airflow providers list`` must show the provider at the wheel's version, the package imported must be
the installed wheel (with its ``py.typed``), and every example DAG must load in a ``DagBag`` without
import errors.

Usage: ``python scripts/check_dist.py --uv .venv/tools/bin/uv --python python3 3.3.2 2.11.2``
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
PACKAGE = "airflow-provider-autocalls"
MODULE = "airflow_provider_autocalls"

# Runs inside the bare venv: the package is the installed wheel, typed, and each example DAG imports.
INSIDE_VENV = """
import importlib.metadata, sys
from pathlib import Path
import airflow_provider_autocalls as package
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 2
    from airflow.models.dagbag import DagBag

expected, *examples = sys.argv[1:]
where = Path(package.__file__).parent
assert where.is_relative_to(sys.prefix), f"imported from {where}, not from the venv {sys.prefix}"
assert (where / "py.typed").is_file(), f"no py.typed in {where}"
versions = {package.__version__, importlib.metadata.version("airflow-provider-autocalls")}
assert versions == {expected}, f"installed versions {versions}, the wheel says {expected}"
import airflow

airflow_3 = int(airflow.__version__.split(".")[0]) >= 3
for path in map(Path, examples):
    bag = DagBag(str(path), safe_mode=False)  # examples off: AIRFLOW__CORE__LOAD_EXAMPLES
    assert not bag.import_errors, f"{path.name} does not import: {bag.import_errors}"
    # An example that says "(Airflow 3)" in its docstring (asset watchers) only imports on Airflow 2.
    if not airflow_3 and "(Airflow 3)" in path.read_text():
        continue
    assert path.stem in bag.dag_ids, f"{path.name} defines no DAG {path.stem!r} (it defines {bag.dag_ids})"
print(f"{len(examples)} example DAGs import")
"""


def source_version() -> str:
    """The one place the version is written: ``__version__`` in the package's ``__init__.py``."""
    tree = ast.parse((ROOT / "src" / MODULE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            return str(ast.literal_eval(node.value))
    raise SystemExit(f"no __version__ in src/{MODULE}/__init__.py")


def check_archives(version: str) -> Path:
    """Check that dist/ holds exactly this version's wheel and sdist, with what a release needs; return the wheel."""
    wheel = DIST / f"{MODULE}-{version}-py3-none-any.whl"
    sdist = DIST / f"{MODULE}-{version}.tar.gz"
    found = sorted(p.name for p in DIST.glob("[!.]*"))
    if found != sorted([wheel.name, sdist.name]):
        raise SystemExit(f"dist/ holds {found}, expected {wheel.name} and {sdist.name}: run `make dist`")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for needed in (f"{MODULE}/py.typed", f"{MODULE}-{version}.dist-info/licenses/LICENSE"):
        if needed not in names:
            raise SystemExit(f"{wheel.name} lacks {needed}")
    with tarfile.open(sdist) as tf:
        names = set(tf.getnames())
    top = f"{MODULE}-{version}"
    for needed in ("LICENSE", "CHANGELOG.md", "README.md", f"src/{MODULE}/py.typed"):
        if f"{top}/{needed}" not in names:
            raise SystemExit(f"{sdist.name} lacks {needed}")
    print(f"{wheel.name} and {sdist.name}: py.typed, LICENSE (and CHANGELOG.md in the sdist) are in")
    return wheel


def run(cmd: list[str], cwd: str | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command; on failure stop with the command and everything it printed. Return its stdout."""
    result = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True, check=False)
    if result.returncode:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(cmd)}\n{result.stdout}{result.stderr}")
    return result.stdout


def check_on_airflow(airflow: str, wheel: Path, version: str, uv: str, python: str) -> None:
    venv = ROOT / "build" / "dist-check" / f"airflow-{airflow}"
    bin_ = venv / "bin"
    started = time.monotonic()
    run([uv, "venv", "-q", "--clear", "--python", python, str(venv)])
    lock = ROOT / "constraints" / f"airflow-{airflow}.txt"
    run(
        [
            uv,
            "pip",
            "install",
            "-q",
            "--python",
            str(bin_ / "python"),
            "--constraint",
            str(lock),
            str(wheel),
            f"apache-airflow=={airflow}",
        ]
    )
    installed = time.monotonic() - started

    with tempfile.TemporaryDirectory(prefix="autocalls-dist-check-") as tmp:
        # Outside the checkout, with only the venv's own variables: nothing from src/ can be picked up.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON", "VIRTUAL_ENV"))}
        env |= {
            "AIRFLOW_HOME": str(Path(tmp) / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
        listed = run([str(bin_ / "airflow"), "providers", "list", "--output", "json"], cwd=tmp, env=env)
        providers = {p["package_name"]: p["version"] for p in json.loads(listed)}
        if providers.get(PACKAGE) != version:
            raise SystemExit(
                f"Airflow {airflow}: `airflow providers list` shows {PACKAGE} as {providers.get(PACKAGE)!r}, "
                f"expected {version!r}; it lists {sorted(providers)}"
            )
        examples = sorted(str(p) for p in (ROOT / "example_dags").glob("example_*.py"))
        imported = run([str(bin_ / "python"), "-c", INSIDE_VENV, version, *examples], cwd=tmp, env=env)
    print(
        f"Airflow {airflow}: wheel + apache-airflow=={airflow} installed in {installed:.1f} s; "
        f"`airflow providers list` shows {PACKAGE} {version}; {imported.strip().splitlines()[-1]}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--uv", required=True, help="the uv to make and fill the venvs with")
    parser.add_argument("--python", default="python3", help="the interpreter the venvs are made from")
    parser.add_argument("airflow", nargs="+", help="Airflow versions, each with constraints/airflow-<v>.txt")
    args = parser.parse_args()
    version = source_version()
    wheel = check_archives(version)
    for airflow in args.airflow:
        check_on_airflow(airflow, wheel, version, args.uv, args.python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
