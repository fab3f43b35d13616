"""Testing helpers: a local Autocalls API simulator and its pytest fixtures.

The simulator loads lazily, so importing this package (the pytest plugin does, in every test
session of anyone who installs the provider) costs nothing until it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_autocalls.testing.simulator import AutocallsSimulator
    from airflow_provider_autocalls.testing.simulator_models import Fault

__all__ = ["AutocallsSimulator", "Fault"]


def __getattr__(name: str) -> Any:
    if name == "AutocallsSimulator":
        from airflow_provider_autocalls.testing.simulator import AutocallsSimulator

        return AutocallsSimulator
    if name == "Fault":
        from airflow_provider_autocalls.testing.simulator_models import Fault

        return Fault
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
