"""On Airflow 2 the reply watcher's module imports, and using the trigger says which Airflow it needs."""

from __future__ import annotations

import importlib

import pytest

from airflow_provider_autocalls.exceptions import AutocallsError
from airflow_provider_autocalls.triggers import _reply_watch


@pytest.mark.skipif(_reply_watch.HAS_EVENT_TRIGGERS, reason="Airflow 3 has event triggers")
def test_constructing_the_trigger_on_airflow_2_names_the_version_it_needs() -> None:
    from airflow import __version__ as airflow_version

    module = importlib.import_module("airflow_provider_autocalls.triggers.autocalls")
    with pytest.raises(AutocallsError, match=r"needs Airflow 3\.0 or later") as raised:
        module.CustomerReplyTrigger(sender_id=12, recipient_phones=["+14155550101"])
    assert f"this is Airflow {airflow_version}" in str(raised.value)


def test_the_module_imports_and_says_whether_event_triggers_exist() -> None:
    from airflow import __version__ as airflow_version

    assert _reply_watch.HAS_EVENT_TRIGGERS is (int(airflow_version.split(".")[0]) >= 3)
