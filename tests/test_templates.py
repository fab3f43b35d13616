"""The template check: one get_templates answer, then a cheap check of every send's variables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_autocalls.exceptions import AutocallsAPIError, AutocallsValidationError
from airflow_provider_autocalls.templates import TemplateSpec, read_template, template_spec
from airflow_provider_autocalls.testing import AutocallsSimulator

REMINDER = {
    "id": 45,
    "name": "appointment_reminder",
    "status": "approved",
    "body_text": "Hi {{1}}, your appointment is on {{2}} at {{3}}.",
    "variables": ["name", "date", "time"],
}
PLAIN = {
    "id": 46,
    "name": "etl_finished",
    "status": "approved",
    "body_text": "Your data is ready.",
    "variables": [],
}
PENDING = {
    "id": 47,
    "name": "promo_pending",
    "status": "pending",
    "body_text": "Hi {{1}}",
    "variables": ["name"],
}


def spec(template: dict[str, Any] = REMINDER) -> TemplateSpec:
    return template_spec([REMINDER, PLAIN, PENDING], template["id"], 12)


@pytest.mark.parametrize(
    "variables",
    [
        {"name": "Ada", "date": "Monday", "time": "10:00"},
        {"1": "Ada", "2": "Monday", "3": "10:00"},
        {"1": "Ada", "date": "Monday", "3": 10},  # mixed, and a number is text
    ],
)
def test_variables_that_fit_pass_in_the_form_the_api_takes(variables: dict[str, Any]) -> None:
    checked = spec().check(variables)
    assert checked is not None
    assert set(checked.values()) <= {"Ada", "Monday", "10:00", "10"}


@pytest.mark.parametrize(
    ("variables", "match"),
    [
        ({"name": "Ada", "date": "Monday", "tme": "10:00"}, "unknown variable 'tme'"),
        ({"1": "Ada", "2": "Monday", "3": "10:00", "4": "x"}, "unknown variable '4'"),
        ({"01": "Ada", "2": "Monday", "3": "10:00"}, "unknown variable '01'"),
        ({"name": "Ada", "date": "Monday"}, "no value for variable 3=time"),
        ({"name": "Ada", "date": "Monday", "time": "  "}, "no value for variable 3=time"),
        (None, "no value for variable 1=name, 2=date, 3=time"),
        ({"1": "Ada", "name": "Bob", "2": "x", "3": "y"}, "variable 1 is given twice"),
    ],
)
def test_variables_that_do_not_fit_are_refused_with_the_template_described(
    variables: dict[str, Any] | None, match: str
) -> None:
    with pytest.raises(AutocallsValidationError, match=match) as error:
        spec().check(variables)
    assert error.value.field == "variables"
    assert "template 45 'appointment_reminder' (approved), variables 1=name, 2=date, 3=time" in str(
        error.value
    )


def test_a_template_without_variables_takes_none() -> None:
    assert spec(PLAIN).check(None) is None
    with pytest.raises(
        AutocallsValidationError,
        match="unknown variable 'x': template 46 'etl_finished' \\(approved\\), no variables",
    ):
        spec(PLAIN).check({"x": "1"})


def test_a_template_the_sender_does_not_have_is_named_with_the_ones_it_has() -> None:
    with pytest.raises(AutocallsValidationError) as error:
        template_spec([REMINDER, PLAIN], 99, 12)
    assert error.value.field == "template_id"
    assert (
        "sender 12 has no template 99; its templates: 45 'appointment_reminder' (approved); 46 'etl_finished'"
        in str(error.value)
    )


def test_a_template_that_is_not_approved_is_refused() -> None:
    with pytest.raises(
        AutocallsValidationError,
        match=r"template 47 'promo_pending' \(pending\), variables 1=name is not approved",
    ):
        spec(PENDING)


def test_a_listing_in_another_shape_is_an_api_error() -> None:
    with pytest.raises(AutocallsAPIError, match="not a list of names"):
        template_spec([{**REMINDER, "variables": "name,date,time"}], 45)


def test_one_request_reads_the_template(hook: Any, sim: AutocallsSimulator) -> None:
    template = read_template(hook, 12, "45")
    assert (template.name, template.names, template.count) == (
        "appointment_reminder",
        ("name", "date", "time"),
        3,
    )
    assert [(r["endpoint"], r["query"]) for r in sim.requests] == [("templates", {"status": "all"})]


def test_checking_many_rows_needs_no_more_requests(
    hook: Any, sim: AutocallsSimulator, make_conn: Callable[..., str]
) -> None:
    template = read_template(hook, 12, 45)
    for i in range(1000):
        template.check({"name": f"n{i}", "date": "Monday", "time": "10:00"})
    assert len(sim.requests) == 1
