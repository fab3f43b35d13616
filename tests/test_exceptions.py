from __future__ import annotations

import pickle

import pytest

from airflow_provider_autocalls.exceptions import (
    AuthenticationError,
    AutocallsAPIError,
    AutocallsConnectionError,
    AutocallsError,
    AutocallsServerError,
    AutocallsValidationError,
    InsufficientBalanceError,
    InvalidPhoneError,
    NotFoundError,
    RateLimitError,
    SenderOfflineError,
    SendOutcomeUnknownError,
    SessionExpiredError,
    TemplateMismatchError,
    TemplateNotApprovedError,
)


@pytest.mark.parametrize(
    ("cls", "retryable"),
    [
        (AutocallsValidationError, False),
        (AuthenticationError, False),
        (NotFoundError, False),
        (SessionExpiredError, False),
        (TemplateNotApprovedError, False),
        (TemplateMismatchError, False),
        (InvalidPhoneError, False),
        (SendOutcomeUnknownError, False),
        (InsufficientBalanceError, True),
        (SenderOfflineError, True),
        (RateLimitError, True),
        (AutocallsServerError, True),
        (AutocallsConnectionError, True),
    ],
)
def test_every_error_says_whether_retrying_can_help(cls: type[AutocallsError], retryable: bool) -> None:
    assert issubclass(cls, AutocallsError)
    assert cls.retryable is retryable


def test_validation_error_is_a_value_error_naming_the_field() -> None:
    err = AutocallsValidationError("sender_id", "must be positive.")
    assert isinstance(err, ValueError)
    assert str(err) == "sender_id: must be positive."
    assert err.field == "sender_id"


def test_api_error_carries_status_code_and_body_and_survives_pickling() -> None:
    body = {"success": False, "error_code": "SESSION_EXPIRED", "session_status": {"is_open": False}}
    err = SessionExpiredError("closed.", status_code=403, error_code="SESSION_EXPIRED", response_body=body)
    assert str(err) == "[HTTP 403 SESSION_EXPIRED] closed."
    assert err.session_status == {"is_open": False}
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is SessionExpiredError
    assert (copy.status_code, copy.error_code, copy.response_body) == (403, "SESSION_EXPIRED", body)
    assert str(copy) == str(err)


def test_outcome_unknown_and_validation_errors_survive_pickling() -> None:
    err = SendOutcomeUnknownError("lost.", sender_id=12, recipient_phone="+14155550000", status_code=502)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.sender_id, copy.recipient_phone, copy.status_code, str(copy)) == (
        12,
        "+14155550000",
        502,
        "lost.",
    )
    valid = pickle.loads(pickle.dumps(AutocallsValidationError("message", "empty.")))
    assert (valid.field, str(valid)) == ("message", "message: empty.")


def test_session_status_is_empty_when_the_body_has_none() -> None:
    err = SessionExpiredError("closed.", status_code=403, response_body="<html>")
    assert err.session_status == {}
    assert isinstance(err, AutocallsAPIError)
