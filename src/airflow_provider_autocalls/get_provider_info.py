"""Provider metadata, read by Airflow's ProvidersManager through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_autocalls import __version__

# The connection form, declared once: Airflow 3 reads these from provider info without importing
# the hook; the hook's form methods build Airflow 2's widgets from the same definitions.
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "timeout": {
        "label": "Timeout (seconds)",
        "description": "How long to wait for an answer. Default 30.",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
    },
    "rate_limit": {
        "label": "Rate limit (requests per second)",
        "description": "Requests per second for this API key, shared by every task and trigger. Default 5.",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of a request that is safe to repeat (never a send in doubt). Default 3.",
        "schema": {"type": ["integer", "null"], "minimum": 0},
    },
    "allow_insecure_http": {
        "label": "Allow plain http://",
        "description": "Allow an http:// base URL on a host other than this machine. The key travels unencrypted.",
        "schema": {"type": ["boolean", "null"], "default": False},
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "login", "extra"],
    "relabeling": {"host": "Base URL", "password": "API key"},
    "placeholders": {
        "host": "https://app.autocalls.ai/api (leave empty for this default)",
        "password": "Autocalls API key",
        "timeout": "30",
        "rate_limit": "5",
        "max_retries": "3",
    },
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider's metadata for Airflow."""
    return {
        "package-name": "airflow-provider-autocalls",
        "name": "Autocalls",
        "description": "Send WhatsApp Business messages through the Autocalls API: "
        "templates, free text inside the 24-hour window, and waiting for a customer's reply.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Autocalls",
                "external-doc-url": "https://app.autocalls.ai",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Autocalls",
                "python-modules": ["airflow_provider_autocalls.hooks.autocalls"],
            }
        ],
        "operators": [
            {
                "integration-name": "Autocalls",
                "python-modules": ["airflow_provider_autocalls.operators.autocalls"],
            }
        ],
        "sensors": [
            {
                "integration-name": "Autocalls",
                "python-modules": ["airflow_provider_autocalls.sensors.autocalls"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Autocalls",
                "python-modules": ["airflow_provider_autocalls.triggers.autocalls"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "autocalls",
                "hook-class-name": "airflow_provider_autocalls.hooks.autocalls.AutocallsHook",
                "hook-name": "Autocalls",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
        "notifications": ["airflow_provider_autocalls.notifications.autocalls.AutocallsNotifier"],
        # `airflow autocalls show-ledger|release-unknown` (Airflow 3; `autocalls-ledger` works everywhere).
        "cli": ["airflow_provider_autocalls.cli.get_autocalls_cli_commands"],
        "config": {
            "autocalls": {
                "description": "The Autocalls provider.",
                "options": {
                    "ledger_location": {
                        "description": "Where send operators keep their ledgers (write-ahead records that stop "
                        "a retry from sending twice) and bulk reports: a folder or an object-storage URI "
                        "(s3://, gs://, ...) every worker can see. Default: autocalls/ledger in the Airflow home.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://my-bucket/autocalls-ledger",
                        "default": None,
                    },
                    "rate_limit_backend": {
                        "description": "Where the API's rate limit is kept: empty (default) or 'local' for each "
                        "process alone, or a Redis URI every worker and triggerer reaches, so that all "
                        "processes using one API key share one limit (needs airflow-provider-autocalls[redis]). "
                        "A connection's extra rate_limit_backend wins over this. If Redis cannot be reached, "
                        "requests fail as retryable; they never fall back to a per-process limit.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "redis://127.0.0.1:6379/0",
                        "default": None,
                    },
                },
            }
        },
    }
