"""The README's table of the simulator's seeded account is the seed, read through the API."""

from __future__ import annotations

from typing import Any

from airflow_provider_autocalls.testing import AutocallsSimulator
from tests.docs.code_blocks import ROOT


def account_tables(sim: AutocallsSimulator) -> str:
    """The two Markdown tables, as the README must hold them."""
    import httpx

    with httpx.Client(base_url=sim.url, headers={"Authorization": f"Bearer {sim.api_key}"}) as api:
        senders: list[dict[str, Any]] = api.get("/user/whatsapp/senders", params={"status": "all"}).json()[
            "data"
        ]
        templates = [
            (sender["id"], template)
            for sender in senders
            for template in api.get(
                f"/user/whatsapp/senders/{sender['id']}/templates", params={"status": "all"}
            ).json()["data"]
        ]
    lines = ["| sender | phone number | display name | status |", "|---|---|---|---|"]
    lines += [f"| {s['id']} | {s['phone_number']} | {s['display_name']} | {s['status']} |" for s in senders]
    lines += ["", "| template | sender | name | status | variables | text |", "|---|---|---|---|---|---|"]
    for sender_id, t in sorted(templates, key=lambda pair: pair[1]["id"]):
        variables = ", ".join(f"`{v}`" for v in t["variables"])
        lines.append(
            f"| {t['id']} | {sender_id} | `{t['name']}` | {t['status']} | {variables} | {t['body_text']} |"
        )
    return "\n".join(lines).replace("|  |", "| |")


def test_readme_lists_the_seeded_account_as_the_simulator_has_it() -> None:
    with AutocallsSimulator(rate_limit=0) as sim:
        expected = account_tables(sim)
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- seeded-account")
    table = readme[readme.index("\n", start) + 1 : readme.index("<!-- /seeded-account -->")].strip()
    assert table == expected
