"""
``airflow autocalls ...`` (Airflow 3, through the provider's ``cli`` entry) and ``autocalls-ledger``
(any Airflow): look at a task instance's ledger, and release messages whose outcome is unknown.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

# (flags, keyword arguments of argparse's add_argument), shared by both command lines.
_TASK_INSTANCE: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--dag-id",), {"required": True, "help": "the DAG of the task instance"}),
    (("--run-id",), {"required": True, "help": "its run id"}),
    (("--task-id",), {"required": True, "help": "its task id"}),
    (("--map-index",), {"type": int, "default": -1, "help": "its map index (default -1: not mapped)"}),
    (("--ledger-location",), {"default": None, "help": "default: [autocalls] ledger_location"}),
]
_RELEASE: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (
        ("--recipient",),
        {"action": "append", "dest": "recipients", "help": "only this recipient (repeatable); default all"},
    ),
    (
        ("--reason",),
        {"default": "checked in the Autocalls dashboard: not delivered", "help": "kept in the ledger"},
    ),
]


def show(args: argparse.Namespace) -> None:
    """Print the task instance's ledger, one JSON object per message."""
    from airflow_provider_autocalls.ledger.release import describe, ledger_entries

    for entry in ledger_entries(args.dag_id, args.run_id, args.task_id, args.map_index, args.ledger_location):
        print(json.dumps(describe(entry)))


def release(args: argparse.Namespace) -> None:
    """Release the task instance's unknown messages, so that its next try sends them."""
    from airflow_provider_autocalls.ledger.release import release_unknown

    released = release_unknown(
        args.dag_id,
        args.run_id,
        args.task_id,
        args.map_index,
        recipients=args.recipients,
        ledger_location=args.ledger_location,
        reason=args.reason,
    )
    print(f"Released {len(released)} message(s): {', '.join(released) or 'none was unknown'}.")
    if released:
        print("Clear the task instance (or let it retry) to send them.")


def get_autocalls_cli_commands() -> list[Any]:
    """The ``airflow autocalls`` command group (Airflow 3 reads it from the provider info)."""
    from airflow.cli.cli_config import ActionCommand, Arg, GroupCommand

    def args(spec: list[tuple[tuple[str, ...], dict[str, Any]]]) -> list[Any]:
        return [Arg(flags, **options) for flags, options in spec]

    return [
        GroupCommand(
            name="autocalls",
            help="Autocalls provider: the ledgers of send tasks",
            subcommands=[
                ActionCommand(
                    name="show-ledger",
                    help="List the messages in a task instance's ledger and their state",
                    func=show,
                    args=args(_TASK_INSTANCE),
                ),
                ActionCommand(
                    name="release-unknown",
                    help="Release messages in doubt (checked in the dashboard) so the next try sends them",
                    func=release,
                    args=args(_TASK_INSTANCE + _RELEASE),
                ),
            ],
        )
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """``autocalls-ledger show-ledger|release-unknown ...`` (for any Airflow version)."""
    parser = argparse.ArgumentParser(prog="autocalls-ledger", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, func, spec in (
        ("show-ledger", show, _TASK_INSTANCE),
        ("release-unknown", release, _TASK_INSTANCE + _RELEASE),
    ):
        command = commands.add_parser(name, help=func.__doc__)
        for flags, options in spec:
            command.add_argument(*flags, **options)
        command.set_defaults(func=func)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
