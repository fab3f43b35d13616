"""State and API logic of the Autocalls simulator (standard library only, no HTTP here).

Everything that changes state runs under :attr:`SimulatorState.lock`; the HTTP layer in
:mod:`airflow_provider_autocalls.testing.simulator` only parses requests, sleeps, drops and writes.
"""

from __future__ import annotations

import copy
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow_provider_autocalls.testing.simulator_models import (
    E164,
    ERR_BALANCE,
    ERR_INVALID_PHONE,
    ERR_SENDER_NOT_FOUND,
    ERR_SESSION_EXPIRED,
    ERR_TEMPLATE_NOT_FOUND,
    INTEGER,
    MAX_MESSAGE,
    MAX_RECIPIENT_NAME,
    MSG_NO_CONVERSATION,
    MSG_SESSION_EXPIRED,
    SENDER_STATUSES,
    TEMPLATE_CATEGORIES,
    TEMPLATE_STATUSES,
    WINDOW,
    Conversation,
    Fault,
    Response,
    Sender,
    SlidingWindowLimiter,
    Template,
    check_integer,
    check_string,
    check_variables,
    fail,
    iso,
    json_response,
    route,
    validation_error,
)


class SimulatorState:
    """Senders, templates, conversations, clock, faults and records of one simulator.

    :param api_key: the only accepted bearer token.
    :param rate_limit: accepted requests per second per key; 0 or ``None`` = unlimited.
    :param seed: load the documented example data (also after :meth:`reset`).
    """

    def __init__(self, api_key: str, rate_limit: float | None, seed: bool) -> None:
        self.lock = threading.Lock()
        self.api_key = api_key
        self.seed = seed
        self.rate_limit = rate_limit
        #: Monotonic clock of the rate limiter (never the movable clock); replaceable in tests.
        self.monotonic: Callable[[], float] = time.monotonic
        self.limiter = SlidingWindowLimiter()
        self._reset_locked()

    # -- lifecycle -----------------------------------------------------------------------------

    def _reset_locked(self) -> None:
        self.offset = 0.0
        self.senders: dict[int, Sender] = {}
        self.templates: dict[int, Template] = {}
        self.conversations: dict[tuple[int, str], Conversation] = {}
        self.records: list[dict[str, Any]] = []
        self.delivered: list[dict[str, Any]] = []
        self.faults: deque[list[Any]] = deque()  # [fault, remaining count]
        self.random = random.Random(0)  # draws for probabilistic faults: repeatable runs
        self.balance: int | None = None
        self.rate_limited_count = 0
        self.limiter.clear()
        self._next_conversation = 1001
        self._next_message = 5001
        self._next_whatsapp_message = 8001
        if self.seed:
            self._load_seed()

    def _load_seed(self) -> None:
        self.senders[12] = Sender(12, "+14155551234", "Acme Corp Support", "online", "GREEN", 10000)
        self.senders[15] = Sender(15, "+442071234567", "Acme Corp Sales", "offline", "GREEN", None)
        for template in (
            Template(
                45,
                12,
                "appointment_reminder",
                "Hi {{1}}, your appointment is on {{2}} at {{3}}.",
                ("name", "date", "time"),
            ),
            Template(46, 12, "etl_finished", "Your data is ready."),
            Template(
                47,
                12,
                "promo_pending",
                "Hi {{1}}, our sale starts now!",
                ("name",),
                "pending",
                "en",
                "marketing",
            ),
            Template(
                48,
                12,
                "promo_rejected",
                "Last chance: {{1}}% off!",
                ("discount",),
                "rejected",
                "en",
                "marketing",
            ),
            Template(49, 12, "etl_failed", "Pipeline {{1}} failed. Please check Airflow.", ("pipeline",)),
        ):
            self.templates[template.id] = template

    def reset(self) -> None:
        """Back to the initial state (the rate limit setting and API key are kept)."""
        with self.lock:
            self._reset_locked()

    # -- clock -----------------------------------------------------------------------------------

    def now(self) -> datetime:
        """Real UTC time plus the offset set by :meth:`advance`."""
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward; returns the new time."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self.lock:
            self.offset += seconds
        return self.now()

    def skew(self, seconds: float) -> datetime:
        """Set the clock to real time plus ``seconds`` (negative: behind); returns the new time."""
        with self.lock:
            self.offset = float(seconds)
        return self.now()

    # -- scripting -------------------------------------------------------------------------------

    def add_sender(self, sender: Sender) -> None:
        """Add or replace a sender."""
        if sender.status not in SENDER_STATUSES:
            raise ValueError(f"sender status must be one of {SENDER_STATUSES}")
        with self.lock:
            self.senders[sender.id] = sender

    def set_sender_status(self, sender_id: int, status: str) -> None:
        """Put a sender online or offline."""
        if status not in SENDER_STATUSES:
            raise ValueError(f"sender status must be one of {SENDER_STATUSES}")
        with self.lock:
            self.senders[sender_id].status = status

    def add_template(self, template: Template) -> None:
        """Add or replace a template of an existing sender."""
        if template.status not in TEMPLATE_STATUSES:
            raise ValueError(f"template status must be one of {TEMPLATE_STATUSES}")
        if template.category not in TEMPLATE_CATEGORIES:
            raise ValueError(f"template category must be one of {TEMPLATE_CATEGORIES}")
        with self.lock:
            if template.sender_id not in self.senders:
                raise KeyError(template.sender_id)
            self.templates[template.id] = template

    def customer_message(self, sender_id: int, recipient_phone: str, text: str, name: str | None) -> None:
        """An inbound message: opens or resets the conversation's 24 h window."""
        with self.lock:
            if sender_id not in self.senders:
                raise KeyError(sender_id)
            now = self.now()
            conversation = self._conversation(sender_id, recipient_phone)
            conversation.last_customer_message_at = now
            conversation.expires_at = max(conversation.expires_at or now, now + WINDOW)
            if name:
                conversation.customer_name = name

    def inject(self, fault: Fault) -> None:
        """Queue a fault (FIFO)."""
        with self.lock:
            self.faults.append([fault, fault.count])

    def snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Deep copies of the request records and delivered messages."""
        with self.lock:
            return copy.deepcopy(self.records), copy.deepcopy(self.delivered)

    def summary(self) -> dict[str, Any]:
        """Counts for ``GET /_sim/state``."""
        with self.lock:
            return {
                "now": self.now().isoformat(),
                "rate_limit": self.rate_limit,
                "balance": self.balance,
                "requests": len(self.records),
                "messages": len(self.delivered),
                "pending_faults": len(self.faults),
                "conversations": len(self.conversations),
                "rate_limited": self.rate_limited_count,
            }

    def set_status(self, record: dict[str, Any], status: int) -> None:
        """Fix a recorded request's status (after a fault replaced or dropped the answer)."""
        with self.lock:
            record["status"] = status

    # -- the API ---------------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        payload: Any,
        token: str | None,
    ) -> tuple[dict[str, Any], Response | None, Fault | None]:
        """Record and answer one API request.

        :returns: ``(record, answer, fault)``; the answer is ``None`` when a fault takes the
            request before processing. The caller applies the fault's delay, drop or status.
        """
        endpoint, sender_segment, route_error = route(method, path)
        authorized = token is not None and secrets.compare_digest(token.encode(), self.api_key.encode())
        with self.lock:
            fault = self._take_fault(endpoint) if self.faults else None
        if fault is not None and fault.arrival_delay:
            time.sleep(fault.arrival_delay)  # still on its way: not counted, not recorded yet
        with self.lock:
            record: dict[str, Any] = {
                "method": method,
                "path": path,
                "endpoint": endpoint,
                "query": query,
                "json": payload,
                "status": None,
                "at": self.now().isoformat(),
                "authorized": authorized,
                # The rate limiter's clock (monotonic seconds): what the API saw, for benchmarks.
                "arrived": self.monotonic(),
            }
            self.records.append(record)
            if fault is not None and not fault.processes:
                return record, None, fault
            if route_error is not None:
                response = route_error
            elif not authorized:
                response = json_response(401, {"message": "Unauthenticated."})
            else:
                assert endpoint is not None
                assert token is not None
                response = self._answer(endpoint, sender_segment, query, payload, token)
            record["status"] = response.status
            return record, response, fault

    def _take_fault(self, endpoint: str | None) -> Fault | None:
        for entry in self.faults:
            fault: Fault = entry[0]
            if fault.endpoint is None or fault.endpoint == endpoint:
                if fault.probability < 1 and self.random.random() >= fault.probability:
                    continue
                entry[1] -= 1
                if entry[1] <= 0:
                    self.faults.remove(entry)
                return fault
        return None

    def _answer(
        self, endpoint: str, sender_segment: str | None, query: dict[str, str], payload: Any, token: str
    ) -> Response:
        # Laravel runs auth before throttling, so only a valid key reaches the limiter.
        retry_after = self.limiter.acquire(token, self.rate_limit, self.monotonic())
        if retry_after is not None:
            self.rate_limited_count += 1
            return json_response(429, {"message": "Too Many Attempts."}, {"Retry-After": str(retry_after)})
        data = payload if isinstance(payload, dict) else {}
        if endpoint == "senders":
            return self._senders(query)
        if endpoint == "templates":
            return self._templates(sender_segment or "", query)
        if endpoint == "session_status":
            return self._session_status(query)
        if endpoint == "send_template":
            return self._send_template(data)
        return self._send_freeform(data)

    def _senders(self, query: dict[str, str]) -> Response:
        status = query.get("status") or "online"
        if status not in ("online", "offline", "all"):
            return validation_error({"status": ["The selected status is invalid."]})
        data = [s.as_json() for s in self.senders.values() if status in ("all", s.status)]
        return json_response(200, {"data": data})

    def _templates(self, sender_segment: str, query: dict[str, str]) -> Response:
        status = query.get("status") or "approved"
        if status not in (*TEMPLATE_STATUSES, "all"):
            return validation_error({"status": ["The selected status is invalid."]})
        sender = self._sender(sender_segment)
        if sender is None:
            return fail(404, "SENDER_NOT_FOUND", ERR_SENDER_NOT_FOUND)
        data = [
            t.as_json()
            for t in self.templates.values()
            if t.sender_id == sender.id and (status == "all" or t.status == status)
        ]
        return json_response(200, {"data": data})

    def _session_status(self, query: dict[str, str]) -> Response:
        errors: dict[str, list[str]] = {}
        check_integer(query, "sender_id", errors)
        check_string(query, "recipient_phone", errors)
        if errors:
            return validation_error(errors)
        sender = self._sender(query["sender_id"])
        if sender is None:
            return fail(404, "SENDER_NOT_FOUND", ERR_SENDER_NOT_FOUND)
        conversation = self.conversations.get((sender.id, query["recipient_phone"]))
        block = self._session_block(conversation)
        if conversation is None:
            return json_response(200, {"success": True, "has_conversation": False, "session_status": block})
        last = conversation.last_customer_message_at
        return json_response(
            200,
            {
                "success": True,
                "has_conversation": True,
                "conversation_id": conversation.id,
                "customer_name": conversation.customer_name,
                "last_customer_message_at": None if last is None else iso(last),
                "session_status": block,
            },
        )

    def _send_template(self, data: dict[str, Any]) -> Response:
        errors: dict[str, list[str]] = {}
        check_integer(data, "sender_id", errors)
        check_integer(data, "template_id", errors)
        check_string(data, "recipient_phone", errors)
        check_string(data, "recipient_name", errors, required=False, max_length=MAX_RECIPIENT_NAME)
        variables = check_variables(data, errors)
        if errors:
            return validation_error(errors)
        sender = self._sender(data["sender_id"])
        if sender is None:
            return fail(404, "SENDER_NOT_FOUND", ERR_SENDER_NOT_FOUND)
        template = self.templates.get(int(str(data["template_id"]).strip()))
        if template is None or template.sender_id != sender.id:
            return fail(404, "TEMPLATE_NOT_FOUND", ERR_TEMPLATE_NOT_FOUND)
        if self.balance is not None and self.balance <= 0:
            return fail(402, "INSUFFICIENT_BALANCE", ERR_BALANCE)
        if sender.status != "online":
            return fail(422, "SENDER_OFFLINE", _offline(sender))
        if template.status != "approved":
            error = f"Template is not approved. Current status: {template.status}"
            return fail(422, "TEMPLATE_NOT_APPROVED", error)
        phone: str = data["recipient_phone"]
        if not E164.fullmatch(phone):
            return fail(422, "INVALID_PHONE", ERR_INVALID_PHONE)
        text, problem = template.render(variables or {})
        if text is None:
            return fail(422, "TEMPLATE_MISMATCH", problem or "Template variables do not match.")

        now = self.now()
        conversation = self._conversation(sender.id, phone)
        name = (data.get("recipient_name") or "").strip() or None
        if name:
            conversation.customer_name = name
        # The docs: a template send opens the 24 h window too; it never shortens one.
        conversation.expires_at = max(conversation.expires_at or now, now + WINDOW)
        ids = self._deliver(
            "template", sender.id, phone, conversation, now, text, name, template.id, variables
        )
        return json_response(200, {"success": True, **ids, "status": "queued"})

    def _send_freeform(self, data: dict[str, Any]) -> Response:
        errors: dict[str, list[str]] = {}
        check_integer(data, "sender_id", errors)
        check_string(data, "recipient_phone", errors)
        check_string(data, "message", errors, max_length=MAX_MESSAGE)
        if errors:
            return validation_error(errors)
        sender = self._sender(data["sender_id"])
        if sender is None:
            return fail(404, "SENDER_NOT_FOUND", ERR_SENDER_NOT_FOUND)
        if self.balance is not None and self.balance <= 0:
            return fail(402, "INSUFFICIENT_BALANCE", ERR_BALANCE)
        if sender.status != "online":
            return fail(503, "SENDER_OFFLINE", _offline(sender))
        phone: str = data["recipient_phone"]
        conversation = self.conversations.get((sender.id, phone))
        if not self._is_open(conversation):
            block = self._session_block(conversation)
            return fail(403, "SESSION_EXPIRED", ERR_SESSION_EXPIRED, session_status=block)
        assert conversation is not None
        if not E164.fullmatch(phone):
            return fail(422, "INVALID_PHONE", ERR_INVALID_PHONE)
        now = self.now()
        ids = self._deliver("freeform", sender.id, phone, conversation, now, data["message"])
        return json_response(
            200, {"success": True, **ids, "session_status": self._session_block(conversation)}
        )

    # -- helpers (called under the lock) -----------------------------------------------------------

    def _sender(self, raw_id: Any) -> Sender | None:
        text = str(raw_id).strip()
        if not INTEGER.fullmatch(text):
            return None
        return self.senders.get(int(text))

    def _conversation(self, sender_id: int, phone: str) -> Conversation:
        key = (sender_id, phone)
        conversation = self.conversations.get(key)
        if conversation is None:
            conversation = Conversation(self._next_conversation, sender_id, phone)
            self._next_conversation += 1
            self.conversations[key] = conversation
        return conversation

    def _is_open(self, conversation: Conversation | None) -> bool:
        return bool(conversation and conversation.expires_at and self.now() < conversation.expires_at)

    def _session_block(self, conversation: Conversation | None) -> dict[str, Any]:
        now = self.now()
        if conversation is not None and conversation.expires_at is not None and now < conversation.expires_at:
            minutes = int((conversation.expires_at - now).total_seconds() // 60)
            return {
                "is_open": True,
                "can_send_freeform": True,
                "requires_template": False,
                "message": (
                    f"Session open ({minutes // 60} hr {minutes % 60} min remaining). "
                    "Unlimited free-form messages allowed."
                ),
                "minutes_remaining": minutes,
                "expires_at": iso(conversation.expires_at),
            }
        return {
            "is_open": False,
            "can_send_freeform": False,
            "requires_template": True,
            "message": MSG_NO_CONVERSATION if conversation is None else MSG_SESSION_EXPIRED,
        }

    def _deliver(
        self,
        kind: str,
        sender_id: int,
        phone: str,
        conversation: Conversation,
        now: datetime,
        text: str,
        recipient_name: str | None = None,
        template_id: int | None = None,
        variables: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        if self.balance is not None:
            self.balance -= 1
        ids = {
            "conversation_id": conversation.id,
            "message_id": self._next_message,
            "whatsapp_message_id": self._next_whatsapp_message,
            "message_sid": "SM" + secrets.token_hex(16),
        }
        self._next_message += 1
        self._next_whatsapp_message += 1
        self.delivered.append(
            {
                "kind": kind,
                "sender_id": sender_id,
                "recipient_phone": phone,
                "recipient_name": recipient_name,
                "template_id": template_id,
                "variables": variables,
                "text": text,
                "message_sid": ids["message_sid"],
                "at": now.isoformat(),
                "conversation_id": conversation.id,
                "message_id": ids["message_id"],
            }
        )
        return ids


def _offline(sender: Sender) -> str:
    return f"Sender is not online. Current status: {sender.status.capitalize()}"
