"""
:class:`CustomerReplyTrigger`: an event trigger that fires when a watched customer writes in.

It fires on a change, never on a state: once per new customer message per recipient, when the
recipient's ``last_customer_message_at`` (the API's clock) moves past the last one this watcher
saw. The first poll of a recipient only takes the baseline, so messages older than the watcher
never fire.

**The cursor.** The last seen message per recipient is kept in the asset state store that
Airflow 3.3+ injects into event triggers (``asset_state_store``), under a key naming the sender
and the recipient. A triggerer restart then resumes from it: a message already seen does not fire
again, and one that arrived while the triggerer was down fires once at the first poll. The cursor
is written just before the event is handed to the triggerer, so a kill in the short moment before
the triggerer writes the event to its database loses that one event (it never fires twice:
follow-ups reach a customer at most once). Without a store (Airflow 3.0-3.2, or a watcher on more
than one asset) the cursor lives in memory: after a restart the first poll takes a new baseline,
so messages that arrived while the triggerer was down do not fire; nothing fires twice.

**Polite polling.** Every read goes through the hook (so through the key's pacer and the shared
limit when configured), after a slot of the watchers' budget (:mod:`._watch_budget`). A failing
poll that may pass (API down, 429, 5xx) is retried with exponential backoff and never fires; one
that cannot (an unknown sender, a bad key) ends the watch with that error. Watchers of the same
connection, sender and poll settings share one poll loop through Airflow's shared streams where
the triggerer supports them (3.3+): each recipient is then read once per round, whoever watches it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from typing import Any, Final

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential

from airflow_provider_autocalls.exceptions import AutocallsError, AutocallsValidationError
from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.sessions import NO_EARLIER_MESSAGE, customer_wrote_since, reply_baseline
from airflow_provider_autocalls.sessions import read_last_customer_message_at as _read_last
from airflow_provider_autocalls.triggers._watch_budget import DEFAULT_POLL_SHARE, budget_for, check_share
from airflow_provider_autocalls.validation import check_id, check_phone

try:
    from airflow.triggers.base import BaseEventTrigger as _EventTriggerBase  # type: ignore[attr-defined,unused-ignore]

    HAS_EVENT_TRIGGERS: Final = True
except ImportError:  # Airflow 2: no event-driven scheduling
    from airflow.triggers.base import BaseTrigger as _EventTriggerBase  # type: ignore[assignment,unused-ignore]

    HAS_EVENT_TRIGGERS = False  # type: ignore[misc,unused-ignore]

from airflow.triggers.base import TriggerEvent

#: The public path the triggerer rebuilds the trigger from.
CLASSPATH: Final = "airflow_provider_autocalls.triggers.autocalls.CustomerReplyTrigger"
#: The longest wait between two tries of a failing poll, in seconds (at least ``poll_interval``).
MAX_BACKOFF: Final = 600.0

log = logging.getLogger(__name__)


def _refuse_on_airflow_2() -> None:
    if not HAS_EVENT_TRIGGERS:
        from airflow import __version__ as airflow_version

        raise AutocallsError(
            f"CustomerReplyTrigger needs Airflow 3.0 or later (event-driven scheduling with "
            f"AssetWatcher); this is Airflow {airflow_version}. On Airflow 2 wait for a reply inside a "
            "run with SessionOpenSensor instead."
        )


def _check_phones(value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise AutocallsValidationError(
            "recipient_phones",
            f"must be a non-empty list of E.164 numbers, got {type(value).__name__}. "
            "Write e.g. recipient_phones=['+14155551234'].",
        )
    phones = [check_phone(phone, f"recipient_phones[{i}]") for i, phone in enumerate(value)]
    return list(dict.fromkeys(phones))


def _check_interval(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise AutocallsValidationError(
            "poll_interval", f"{value!r} is not a number of seconds above 0; the default is 60."
        )
    return float(value)


class CustomerReplyTrigger(_EventTriggerBase):
    """
    Fire one event per new customer message of each watched recipient (use it in an ``AssetWatcher``).

    Its event's payload: ``sender_id``, ``recipient_phone``, ``last_customer_message_at`` (the
    API's text), ``customer_name`` and ``conversation_id``. It only reads; a DAG scheduled on the
    watched asset does the follow-up.

    :param sender_id: the sender whose conversations are watched.
    :param recipient_phones: the customers to watch, in E.164 form.
    :param poll_interval: seconds between two reads of the same recipient (longer when the
        watchers' budget cannot read every recipient that often).
    :param autocalls_conn_id: the Autocalls connection.
    :param poll_share: the share of the API key's rate limit that watchers may take (default 0.2).
    :raises AutocallsValidationError: an input is malformed (checked here, when the DAG is parsed).
    :raises AutocallsError: Airflow is older than 3.0.
    """

    def __init__(
        self,
        *,
        sender_id: int | str,
        recipient_phones: Sequence[str],
        poll_interval: float = 60.0,
        autocalls_conn_id: str = AutocallsHook.default_conn_name,
        poll_share: float = DEFAULT_POLL_SHARE,
    ) -> None:
        _refuse_on_airflow_2()
        super().__init__()
        self.sender_id = check_id(sender_id, "sender_id")
        self.recipient_phones = _check_phones(recipient_phones)
        self.poll_interval = _check_interval(poll_interval)
        self.autocalls_conn_id = autocalls_conn_id
        self.poll_share = check_share(poll_share)
        # The last message seen per recipient; absent until the recipient's first poll.
        self._seen: dict[str, Any] = {}
        self._memory_only = False

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASSPATH,
            {
                "sender_id": self.sender_id,
                "recipient_phones": list(self.recipient_phones),
                "poll_interval": self.poll_interval,
                "autocalls_conn_id": self.autocalls_conn_id,
                "poll_share": self.poll_share,
            },
        )

    # -- the poll loop of one watcher ------------------------------------------------------------------

    async def run(self) -> AsyncIterator[TriggerEvent]:
        _refuse_on_airflow_2()
        hook = AutocallsHook(self.autocalls_conn_id)
        rounds = poll_rounds(
            hook, self.sender_id, lambda: self.recipient_phones, self.poll_interval, self.poll_share
        )
        async for phone, status in rounds:
            event = await self._consider(phone, status)
            if event is not None:
                yield event

    # -- shared streams (Airflow 3.3+): one poll loop per connection, sender and poll settings ----------

    def shared_stream_key(self) -> Hashable | None:
        return _stream_key(self.serialize()[1])

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        key = _stream_key(kwargs)
        hook = AutocallsHook(kwargs["autocalls_conn_id"])
        rounds = poll_rounds(hook, int(kwargs["sender_id"]), lambda: _subscribers.phones(key), key[3], key[4])
        async for phone, status in rounds:
            yield {"recipient_phone": phone, "status": status}

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        key = _stream_key(self.serialize()[1])
        mine = set(self.recipient_phones)
        _subscribers.add(key, mine)
        try:
            async for raw in shared_stream:
                if raw["recipient_phone"] in mine:
                    event = await self._consider(raw["recipient_phone"], raw["status"])
                    if event is not None:
                        yield event
        finally:
            _subscribers.remove(key, mine)

    # -- the cursor -------------------------------------------------------------------------------------

    async def _consider(self, phone: str, status: dict[str, Any]) -> TriggerEvent | None:
        """The event for a new message in ``status``, or ``None``; moves the recipient's cursor."""
        last = _read_last(status)  # checks the answer is readable before anything moves
        if phone not in self._seen:
            stored = await self._load(phone)
            if stored is None:  # the recipient's first poll: a baseline, never an event
                self._seen[phone] = last
                await self._save(phone, reply_baseline(status))
                return None
            self._seen[phone] = _read_last({"last_customer_message_at": stored["last_customer_message_at"]})
        seen = self._seen[phone]
        if not customer_wrote_since(status, seen if seen is not None else NO_EARLIER_MESSAGE):
            return None
        await self._save(phone, reply_baseline(status))
        self._seen[phone] = last
        return TriggerEvent(
            {
                "sender_id": self.sender_id,
                "recipient_phone": phone,
                "last_customer_message_at": reply_baseline(status),
                "customer_name": status.get("customer_name"),
                "conversation_id": status.get("conversation_id"),
            }
        )

    def _store_key(self, phone: str) -> str:
        return f"autocalls.customer_reply.{self.sender_id}.{phone}"

    def _store(self) -> Any:
        return None if self._memory_only else getattr(self, "asset_state_store", None)

    async def _load(self, phone: str) -> dict[str, Any] | None:
        store = self._store()
        if store is None:
            return None
        try:
            if hasattr(store, "aget"):
                value = await store.aget(self._store_key(phone), None)
            else:  # Airflow 3.3.0/3.3.1 have only the blocking accessors
                value = await asyncio.to_thread(store.get, self._store_key(phone), None)
        except ValueError:
            self._without_store()
            return None
        if isinstance(value, dict) and "last_customer_message_at" in value:
            return value
        return None

    async def _save(self, phone: str, last_customer_message_at: str | None) -> None:
        store = self._store()
        if store is None:
            return
        value = {"last_customer_message_at": last_customer_message_at}
        try:
            if hasattr(store, "aset"):
                await store.aset(self._store_key(phone), value)
            else:
                await asyncio.to_thread(store.set, self._store_key(phone), value)
        except ValueError:
            self._without_store()

    def _without_store(self) -> None:
        # The store's single-asset accessors refuse a watcher shared by several assets.
        self._memory_only = True
        self.log.warning(
            "The asset state store needs a watcher on exactly one asset; CustomerReplyTrigger keeps its "
            "cursor in memory, so messages that arrive while the triggerer is down will not fire."
        )


# -- polling -------------------------------------------------------------------------------------------


def _stream_key(kwargs: dict[str, Any]) -> tuple[str, str, int, float, float]:
    return (
        CLASSPATH,
        str(kwargs["autocalls_conn_id"]),
        int(kwargs["sender_id"]),
        float(kwargs["poll_interval"]),
        float(kwargs["poll_share"]),
    )


class _Subscribers:
    """The recipients each shared poll loop of this triggerer must read (several watchers may share one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phones: dict[Hashable, Counter[str]] = {}

    def add(self, key: Hashable, phones: set[str]) -> None:
        with self._lock:
            self._phones.setdefault(key, Counter()).update(phones)

    def remove(self, key: Hashable, phones: set[str]) -> None:
        with self._lock:
            counter = self._phones.get(key)
            if counter is not None:
                counter.subtract(phones)
                self._phones[key] = +counter

    def phones(self, key: Hashable) -> list[str]:
        with self._lock:
            return sorted(self._phones.get(key, Counter()))


_subscribers = _Subscribers()


def _may_pass(error: BaseException) -> bool:
    return isinstance(error, AutocallsError) and error.retryable


def _log_failed_poll(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning("A reply watcher's poll failed (%s); trying again in %.1f s.", error, wait)


async def poll_rounds(
    hook: AutocallsHook,
    sender_id: int,
    phones: Callable[[], Sequence[str]],
    poll_interval: float,
    poll_share: float,
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """
    Read each recipient's session status once per round, forever; yield ``(phone, status)``.

    A round starts every ``poll_interval`` seconds, or as soon as the previous one ends when the
    watchers' budget makes it longer. A read that fails with an error that may pass is tried again
    with exponential backoff (from ``poll_interval`` up to :data:`MAX_BACKOFF`); any other error
    ends the loop.
    """
    settings = await hook.async_settings()
    budget = budget_for(settings.api_key, settings.rate_limit, poll_share)
    retrying = AsyncRetrying(
        retry=retry_if_exception(_may_pass),
        wait=wait_exponential(
            multiplier=poll_interval, min=poll_interval, max=max(poll_interval, MAX_BACKOFF)
        ),
        before_sleep=_log_failed_poll,
        reraise=True,
    )
    while True:
        started = time.monotonic()
        for phone in phones():
            status = await retrying.wraps(_read)(hook, budget, sender_id, phone)
            yield phone, status
        await asyncio.sleep(max(0.0, started + poll_interval - time.monotonic()))


async def _read(hook: AutocallsHook, budget: Any, sender_id: int, phone: str) -> dict[str, Any]:
    await budget.wait_turn()
    return await hook.async_get_session_status(sender_id, phone)
