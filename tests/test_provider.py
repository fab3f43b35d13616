"""Registration with Airflow, and cheap DAG parsing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from airflow_provider_autocalls import __version__
from airflow_provider_autocalls.get_provider_info import get_provider_info


def test_provider_info_declares_the_connection_form() -> None:
    info = get_provider_info()
    [conn] = info["connection-types"]
    assert conn["connection-type"] == "autocalls"
    assert conn["hook-class-name"] == "airflow_provider_autocalls.hooks.autocalls.AutocallsHook"
    assert conn["conn-fields"]["rate_limit"]["schema"]["type"] == ["number", "null"]
    assert conn["ui-field-behaviour"]["relabeling"]["password"] == "API key"
    assert info["versions"] == [__version__]


def test_providers_manager_knows_the_connection_type() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-autocalls" in manager.providers
    hook_info = manager.hooks["autocalls"]
    assert hook_info is not None
    assert hook_info.hook_class_name == "airflow_provider_autocalls.hooks.autocalls.AutocallsHook"
    assert hook_info.connection_id_attribute_name == "autocalls_conn_id"


def test_airflow_providers_list_shows_it() -> None:
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    out = subprocess.run(
        [airflow, "providers", "list", "--output", "plain"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert "airflow-provider-autocalls" in out


MODULES = [
    "airflow_provider_autocalls.hooks.autocalls",
    "airflow_provider_autocalls.operators.autocalls",
    "airflow_provider_autocalls.sensors.autocalls",
    "airflow_provider_autocalls.triggers.autocalls",
    "airflow_provider_autocalls.notifications.autocalls",
]


@pytest.mark.parametrize("module", MODULES)
def test_importing_our_modules_does_not_import_httpx(module: str) -> None:
    """DAG files import operators at every parse; httpx loads only when a client is built."""
    # Airflow 3's task SDK imports httpx itself, so start from what Airflow alone loads.
    code = (
        "import sys, airflow.providers.common.compat.sdk as sdk; sdk.BaseOperator; sdk.BaseHook\n"
        "before = 'httpx' in sys.modules\n"
        f"import {module}\n"
        "print(before, 'httpx' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    if out[0] == "True":
        pytest.skip("this Airflow imports httpx itself; ruff's TID253 rule guards our modules")
    assert out == ["False", "False"]
