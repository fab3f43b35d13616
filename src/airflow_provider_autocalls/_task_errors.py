"""How an error of ours ends a task: retried by Airflow only when retrying can help."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_autocalls.exceptions import AutocallsError


@contextmanager
def fail_fast_unless_retryable() -> Iterator[None]:
    """
    Let retryable errors through to Airflow's normal retries; fail the task at once on the rest.

    A validation error, a refused key, a missing template or a send in doubt stays the same however
    often it is retried, and a retry of a send in doubt could message the customer twice. The
    original error stays attached as ``__cause__``.
    """
    try:
        yield
    except AutocallsError as error:
        if error.retryable:
            raise
        raise AirflowFailException(f"{type(error).__name__}: {error}") from error
