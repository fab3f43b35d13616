"""
Errors raised by the Autocalls provider.

One hierarchy, rooted at :class:`AutocallsError`. Every class says through ``retryable`` whether
trying the same call again can ever succeed, so operators decide "retry" or "fail now" from the
type, never from message text. Messages say what went wrong and what to do; none of them ever
contains the API key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class AutocallsError(Exception):
    """Base class of every error this provider raises."""

    #: Whether repeating the same call later can succeed without the user changing anything.
    retryable: ClassVar[bool] = False

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take keyword-only arguments, which the default recipe loses when an error is
        # pickled (Airflow passes exceptions between processes); rebuild from args and attributes.
        return (_rebuild_error, (type(self), self.args, self.__dict__))


def _rebuild_error(cls: type[AutocallsError], args: tuple[Any, ...], state: dict[str, Any]) -> AutocallsError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class AutocallsValidationError(AutocallsError, ValueError):
    """
    Bad input, refused before any request was made.

    :param field: the name of the argument or connection field that is wrong.
    :param message: what is wrong with it and what is accepted.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class AutocallsAPIError(AutocallsError):
    """
    The API answered, and the answer is an error.

    :param message: what went wrong and what to do.
    :param status_code: the HTTP status of the answer, or 0 when no answer came.
    :param error_code: the body's ``error_code`` (e.g. ``TEMPLATE_NOT_APPROVED``), or ``None``.
    :param response_body: the decoded JSON body, or the first characters of a body that is not JSON.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error_code: str | None = None,
        response_body: Any = None,
    ) -> None:
        self.status_code = status_code
        self.error_code = error_code
        self.response_body = response_body
        super().__init__(message)

    def __str__(self) -> str:
        if not self.status_code:  # no answer came (0): there is no status to show
            return str(self.args[0])
        code = f" {self.error_code}" if self.error_code else ""
        return f"[HTTP {self.status_code}{code}] {self.args[0]}"


class AuthenticationError(AutocallsAPIError):
    """The API key was refused (401, or 403 other than an expired session)."""


class InsufficientBalanceError(AutocallsAPIError):
    """The account has no balance left (402). Nothing was sent; a top-up makes a retry succeed."""

    retryable = True


class SessionExpiredError(AutocallsAPIError):
    """
    Free text was refused because the 24-hour window with the recipient is closed (403 SESSION_EXPIRED).

    ``session_status`` carries the API's session status object.
    """

    @property
    def session_status(self) -> Mapping[str, Any]:
        body = self.response_body if isinstance(self.response_body, Mapping) else {}
        status = body.get("session_status")
        return status if isinstance(status, Mapping) else {}


class NotFoundError(AutocallsAPIError):
    """The sender or template does not exist or belongs to another account (404)."""


class SenderOfflineError(AutocallsAPIError):
    """The sender is offline (SENDER_OFFLINE, a 422 or a 503). Nothing was sent; it may come back online."""

    retryable = True


class TemplateNotApprovedError(AutocallsAPIError):
    """The template is pending or rejected by Meta (422 TEMPLATE_NOT_APPROVED)."""


class TemplateMismatchError(AutocallsAPIError):
    """The variables do not fit the template's placeholders (422 TEMPLATE_MISMATCH)."""


class InvalidPhoneError(AutocallsAPIError):
    """The API refused the recipient's phone number (422 INVALID_PHONE)."""


class RateLimitError(AutocallsAPIError):
    """The API kept answering 429 after every retry. Nothing was sent."""

    retryable = True


class AutocallsServerError(AutocallsAPIError):
    """The API failed (5xx) on a read, after every retry."""

    retryable = True


class AutocallsConnectionError(AutocallsError):
    """
    The API could not be reached (DNS, refused connection, connect timeout) after every retry.

    Nothing was sent: the request never reached the API.
    """

    retryable = True


class SendOutcomeUnknownError(AutocallsError):
    """
    A send may have reached the API, but its answer was lost.

    Raised on a read timeout, a dropped connection or a 5xx answer to a send. The message may have
    been delivered: it is never sent again automatically. Check the recipient's conversation in
    the Autocalls dashboard (or the session status) before sending again by hand.

    :param message: what happened.
    :param sender_id: the sender of the send in doubt.
    :param recipient_phone: its recipient.
    :param status_code: the HTTP status, if an answer came at all.
    """

    def __init__(
        self,
        message: str,
        *,
        sender_id: int | None = None,
        recipient_phone: str | None = None,
        status_code: int | None = None,
    ) -> None:
        self.sender_id = sender_id
        self.recipient_phone = recipient_phone
        self.status_code = status_code
        super().__init__(message)
