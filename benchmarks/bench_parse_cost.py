"""
DAG parse cost: what importing our operators and sensors adds to a DAG file's parse, against
``HttpOperator`` (apache-airflow-providers-http). Each import is timed in fresh interpreters on top
of a common baseline (the SDK's ``BaseOperator`` and ``BaseSensorOperator`` already loaded); prints
the medians and the ratio ours/http (goal: <= 1.0x). Also checks that our modules do not import
``httpx`` at parse time (goal: none), both in ``sys.modules`` and in our sources' top-level code.
"""

from __future__ import annotations

import ast
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 7
OURS = "import airflow_provider_autocalls.operators.autocalls, airflow_provider_autocalls.sensors.autocalls"
HTTP = "from airflow.providers.http.operators.http import HttpOperator"

# Runs in a fresh interpreter: load what both sides need, then time only the provider import.
PROBE = """
import json, sys, time
from airflow.providers.common.compat import sdk
sdk.BaseOperator, sdk.BaseSensorOperator
before = set(sys.modules)
started = time.perf_counter()
{statement}
seconds = time.perf_counter() - started
new = set(sys.modules) - before
print(json.dumps({{"seconds": seconds, "modules": len(new), "httpx_before": "httpx" in before,
                  "httpx_new": sorted(m for m in new if m.split(".")[0] in ("httpx", "httpcore"))}}))
"""


def probe(statement: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(statement=statement)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def top_level_httpx_imports(package: Path) -> list[str]:
    """Our modules whose top-level statements (not functions, not ``if TYPE_CHECKING:``) import httpx."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in _top_level(ast.parse(path.read_text(), str(path)).body):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "httpx" for name in names):
                found.append(f"{path.relative_to(package.parent)}:{node.lineno}")
    return found


def _top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements run at import: descends into if/try/with blocks, skips ``if TYPE_CHECKING:``."""
    statements: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if test not in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                statements += _top_level(node.body)
            statements += _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                statements += _top_level(block)
        elif isinstance(node, ast.With):
            statements += _top_level(node.body)
        else:
            statements.append(node)
    return statements


def main() -> None:
    import airflow_provider_autocalls

    runs: dict[str, list[dict[str, object]]] = {"ours": [], "http": []}
    for _ in range(REPEATS):  # interleaved, so a noisy moment hits both sides alike
        runs["ours"].append(probe(OURS))
        runs["http"].append(probe(HTTP))
    median = {name: statistics.median(float(str(r["seconds"])) for r in rs) for name, rs in runs.items()}
    modules = {name: statistics.median(int(str(r["modules"])) for r in rs) for name, rs in runs.items()}
    print(f"parse cost: median of {REPEATS} fresh interpreters, import only (SDK base classes preloaded)")
    for name, label in (("ours", "our operators + sensors"), ("http", "HttpOperator")):
        print(f"parse cost: {label:<23} {1000 * median[name]:7.1f} ms, {modules[name]:.0f} new modules")
    print(f"parse cost: ours/http = {median['ours'] / median['http']:.2f}x (goal <= 1.0x)")

    first = runs["ours"][0]
    new_httpx = sorted({m for r in runs["ours"] for m in r["httpx_new"]})  # type: ignore[attr-defined]
    print(
        f"parse cost: httpx already loaded by the baseline: {'yes' if first['httpx_before'] else 'no'}; "
        f"httpx/httpcore modules newly imported by ours: {', '.join(new_httpx) or 'none'}"
    )
    package = Path(airflow_provider_autocalls.__file__).parent
    offenders = top_level_httpx_imports(package)
    print(
        f"parse cost: our modules importing httpx at module level: {', '.join(offenders) or 'none'} (goal: none)"
    )


if __name__ == "__main__":
    main()
