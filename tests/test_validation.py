from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_autocalls.exceptions import AutocallsValidationError
from airflow_provider_autocalls.validation import (
    SENDER_STATUSES,
    check_choice,
    check_id,
    check_message,
    check_phone,
    check_recipient_name,
    check_variables,
)


@pytest.mark.parametrize("phone", ["+1234567", "+14155551234", "+123456789012345"])
def test_valid_phones_pass_unchanged(phone: str) -> None:
    assert check_phone(phone) == phone


@pytest.mark.parametrize(
    "phone",
    [
        "14155551234",  # no +
        "+1 415 555 1234",
        "+1-415-555-1234",
        "+04155551234",  # leading zero
        "+123456",  # too short
        "+1234567890123456",  # too long
        "+14155551234\n",  # trailing newline ($ would accept it)
        " +14155551234",
        "+١٤١٥٥٥٥١٢٣٤",  # Arabic-Indic digits
        "+１４１５５５５１２３４",  # fullwidth digits
        "",
        None,
        14155551234,
    ],
)
def test_bad_phones_are_refused_with_the_accepted_form(phone: object) -> None:
    with pytest.raises(AutocallsValidationError, match=r"recipient_phone: .*E\.164.*\+14155551234") as err:
        check_phone(phone)
    assert err.value.field == "recipient_phone"


@given(st.text())
def test_phone_check_accepts_exactly_e164(text: str) -> None:
    is_e164 = (
        text.startswith("+")
        and 8 <= len(text) <= 16
        and all(c in "0123456789" for c in text[1:])
        and text[1] != "0"
    )
    if is_e164:
        assert check_phone(text) == text
    else:
        with pytest.raises(AutocallsValidationError):
            check_phone(text)


@pytest.mark.parametrize(("value", "expected"), [(12, 12), ("12", 12), ("007", 7)])
def test_ids_accept_positive_integers_and_rendered_digits(value: object, expected: int) -> None:
    assert check_id(value, "sender_id") == expected


@pytest.mark.parametrize("value", [0, -1, True, False, 1.0, "1.0", " 12", "12a", "", None, "١٢"])
def test_ids_refuse_everything_else(value: object) -> None:
    with pytest.raises(AutocallsValidationError, match="^template_id: "):
        check_id(value, "template_id")


@pytest.mark.parametrize("message", ["x", "a" * 4096, "  hi  "])
def test_messages_within_limits_pass(message: str) -> None:
    assert check_message(message) == message


@pytest.mark.parametrize(
    ("message", "reason"),
    [("", "empty"), (" \n\t", "empty"), ("a" * 4097, "4097 characters"), (None, "must be text"), (5, "text")],
)
def test_bad_messages_are_refused(message: object, reason: str) -> None:
    with pytest.raises(AutocallsValidationError, match=f"^message: .*{reason}"):
        check_message(message)


def test_recipient_name_limit() -> None:
    assert check_recipient_name(None) is None
    assert check_recipient_name("n" * 255) == "n" * 255
    with pytest.raises(AutocallsValidationError, match="^recipient_name: has 256 characters"):
        check_recipient_name("n" * 256)
    with pytest.raises(AutocallsValidationError, match="^recipient_name: "):
        check_recipient_name(["Ada"])


def test_variables_are_normalised_to_strings() -> None:
    assert check_variables(None) is None
    assert check_variables({"1": "Ada", 2: 15, "time": 2.5}) == {"1": "Ada", "2": "15", "time": "2.5"}


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        (["Ada"], "variables"),
        ("{'1': 'Ada'}", "variables"),
        ({"": "Ada"}, "variables"),
        ({" ": "Ada"}, "variables"),
        ({None: "Ada"}, "variables"),
        ({"1": None}, "variables['1']"),
        ({"1": True}, "variables['1']"),
        ({"1": {"nested": 1}}, "variables['1']"),
        ({"1": float("nan")}, "variables['1']"),
    ],
)
def test_bad_variables_are_refused_naming_the_field(variables: object, field: str) -> None:
    with pytest.raises(AutocallsValidationError) as err:
        check_variables(variables)
    assert err.value.field == field


def test_choice() -> None:
    assert check_choice("all", SENDER_STATUSES) == "all"
    with pytest.raises(AutocallsValidationError, match="^status: 'ALL' is not one of online, offline, all"):
        check_choice("ALL", SENDER_STATUSES)
