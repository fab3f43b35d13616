"""Every Python block of README.md and docs/ runs as written, against the simulator.

Plain blocks run in this process, with the simulator serving ``autocalls_default``. Blocks marked
as files form a small project per document (a DAG file and its test, say); pytest runs that
project's tests in a fresh process, with nothing of this suite's Airflow set-up in its environment,
as a user who copied them would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_autocalls.testing import AutocallsSimulator
from tests.docs.code_blocks import DOCS, ROOT, Block, blocks

ALL = [block for doc in DOCS for block in blocks(doc)]
INLINE = [b for b in ALL if not b.illustrative and b.file is None]
PROJECTS = sorted({b.doc for b in ALL if b.file is not None})


def test_the_docs_have_python_blocks_of_each_kind() -> None:
    readme = [b for b in ALL if b.doc.name == "README.md"]
    assert any(b.file is None and not b.illustrative for b in readme)
    assert any(b.file and Path(b.file).name.startswith("test_") for b in readme)


@pytest.mark.parametrize("block", ALL, ids=[b.where for b in ALL])
def test_every_block_compiles(block: Block) -> None:
    compile(block.code, block.where, "exec")


@pytest.mark.parametrize("block", INLINE, ids=[b.where for b in INLINE])
def test_block_runs_against_the_simulator(block: Block, autocalls_connection: AutocallsSimulator) -> None:
    exec(compile(block.code, block.where, "exec"), {"__name__": "__doc_block__"})


@pytest.mark.parametrize("doc", PROJECTS, ids=[str(d.relative_to(ROOT)) for d in PROJECTS])
def test_file_blocks_pass_their_own_tests(doc: Path, tmp_path: Path) -> None:
    files = [b for b in blocks(doc) if b.file is not None]
    for block in files:
        path = tmp_path / str(block.file)
        assert not path.exists(), f"{block.where}: {block.file} appears twice"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.code)
    tests = [str(block.file) for block in files if Path(str(block.file)).name.startswith("test_")]
    if not tests:
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AUTOCALLS_"))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), *tests],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert f"{len(tests)} passed" in result.stdout or "passed" in result.stdout
