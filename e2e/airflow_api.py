"""The few calls of Airflow 3's REST API (``/api/v2``) that the end-to-end run makes, as a user would."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from e2e.deployment import wait_until

FINISHED = {"success", "failed", "upstream_failed", "skipped", "removed"}


class AirflowAPI:
    """
    A logged-in client of the API server.

    :param base_url: the API server, ``http://127.0.0.1:<port>``.
    :param username: a user of the simple auth manager.
    :param password: that user's password.
    """

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url
        self._credentials = {"username": username, "password": password}
        self._client = httpx.Client(base_url=base_url, timeout=30)

    def login(self) -> bool:
        """Sign in with the simple auth manager's token endpoint; True once signed in."""
        answer = self._client.post("/auth/token", json=self._credentials)
        answer.raise_for_status()
        self._client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        return True

    def close(self) -> None:
        self._client.close()

    def get(self, path: str, **params: Any) -> Any:
        answer = self._client.get(f"/api/v2{path}", params=params)
        answer.raise_for_status()
        return answer.json()

    def _send(self, method: str, path: str, body: dict[str, Any]) -> Any:
        answer = self._client.request(method, f"/api/v2{path}", json=body)
        if answer.is_error:
            raise RuntimeError(f"{method} {path} -> {answer.status_code}: {answer.text[:500]}")
        return answer.json()

    # -- what the run needs ----------------------------------------------------------------------

    def wait_healthy(self, components: tuple[str, ...], timeout: float) -> dict[str, Any]:
        """Wait until ``/monitor/health`` reports each of ``components`` healthy."""

        def healthy() -> dict[str, Any] | None:
            health = self.get("/monitor/health")
            ok = all(health.get(name, {}).get("status") == "healthy" for name in components)
            return health if ok else None

        return wait_until(healthy, timeout=timeout, interval=1, what=f"healthy {', '.join(components)}")  # type: ignore[no-any-return]

    def wait_dag(self, dag_id: str, timeout: float) -> None:
        """Wait until the DAG processor has parsed ``dag_id``; fail at once on an import error."""

        def parsed() -> bool:
            errors = self.get("/importErrors")["import_errors"]
            if errors:
                raise AssertionError(f"DAG import errors: {errors}")
            return bool(self.get(f"/dags/{dag_id}"))

        wait_until(parsed, timeout=timeout, interval=1, what=f"DAG {dag_id} to be parsed")

    def add_connection(
        self,
        connection_id: str,
        conn_type: str,
        host: str,
        password: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        body = {"connection_id": connection_id, "conn_type": conn_type, "host": host, "password": password}
        if extra is not None:
            body["extra"] = json.dumps(extra)
        self._send("POST", "/connections", body)

    def newest_job(self, job_type: str) -> dict[str, Any] | None:
        """The newest live job of a kind (``SchedulerJob``, ``TriggererJob``, ...)."""
        jobs = self.get("/jobs", job_type=job_type, is_alive=True, order_by="-start_date", limit=1)["jobs"]
        return jobs[0] if jobs else None

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Trigger a run of ``dag_id`` now; returns its run id."""
        run = self._send("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")  # type: ignore[no-any-return]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)["task_instances"])

    def wait_task_state(
        self, dag_id: str, run_id: str, task_id: str, state: str, timeout: float
    ) -> dict[str, Any]:
        """Wait until the task instance is in ``state``; fail early if the run finished first."""

        def reached() -> dict[str, Any] | None:
            ti = self.task_instance(dag_id, run_id, task_id)
            if ti["state"] == state:
                return ti
            if ti["state"] in FINISHED:
                raise AssertionError(f"{task_id} ended {ti['state']} while waiting for {state}")
            return None

        return wait_until(reached, timeout=timeout, interval=0.5, what=f"{task_id} to be {state}")  # type: ignore[no-any-return]

    def wait_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        """Wait until the run finishes; returns its final state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in {"success", "failed"}:
                return state
            time.sleep(1)
        raise TimeoutError(f"run {run_id} of {dag_id} did not finish in {timeout:.0f} s")
