"""A worker process running one try of a bulk send, for the SIGKILL test (argv: recipients file, ledger)."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace
from typing import Any

from airflow_provider_autocalls.operators.autocalls import BulkSendTemplateOperator

if __name__ == "__main__":
    recipients_file, ledger_location = sys.argv[1], sys.argv[2]
    operator = BulkSendTemplateOperator(
        task_id="bulk",
        sender_id=12,
        template_id=46,
        recipients_file=recipients_file,
        ledger_location=ledger_location,
    )
    context: Any = {"ti": SimpleNamespace(dag_id="d", run_id="r1", task_id="bulk", map_index=-1)}
    print(json.dumps(operator.execute(context)), flush=True)
