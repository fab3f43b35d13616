"""The one builder from connection to client settings (no request is made here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_autocalls.exceptions import AutocallsValidationError
from airflow_provider_autocalls.hooks.autocalls import DEFAULT_BASE_URL, AutocallsHook, build_settings


def build(host: str | None = "https://api.example.com/api", extras: Any = None, **overrides: Any) -> Any:
    return build_settings("c", host, "secret-key", extras or {}, overrides)


def test_defaults() -> None:
    settings = build(host=None)
    assert (settings.base_url, settings.timeout, settings.rate_limit, settings.max_retries) == (
        DEFAULT_BASE_URL,
        30.0,
        5.0,
        3,
    )


def test_the_key_never_shows_in_a_repr() -> None:
    assert "secret-key" not in repr(build())
    assert build().headers["Authorization"] == "Bearer secret-key"


@pytest.mark.parametrize(
    ("extras", "overrides", "expected"),
    [
        ({}, {}, (30.0, 5.0, 3)),
        ({"timeout": "12", "rate_limit": "2.5", "max_retries": "0"}, {}, (12.0, 2.5, 0)),
        ({"timeout": 12, "rate_limit": 2}, {"timeout": 4, "rate_limit": 9, "max_retries": 1}, (4.0, 9.0, 1)),
        ({"timeout": "", "rate_limit": None}, {}, (30.0, 5.0, 3)),  # empty form fields mean "default"
    ],
)
def test_hook_arguments_win_over_connection_extras(
    extras: dict[str, Any], overrides: dict[str, Any], expected: tuple[float, float, int]
) -> None:
    settings = build(extras=extras, **overrides)
    assert (settings.timeout, settings.rate_limit, settings.max_retries) == expected


@pytest.mark.parametrize(
    ("host", "extras", "field"),
    [
        ("app.autocalls.ai/api", {}, "host"),  # no scheme
        ("ftp://app.autocalls.ai/api", {}, "host"),
        ("https://", {}, "host"),
        ("https://user:pw@app.autocalls.ai/api", {}, "host"),
        ("https://app.autocalls.ai/api?key=1", {}, "host"),
        ("http://app.autocalls.ai/api", {}, "host"),  # plain http off loopback
        ("https://a.example/api", {"timeout": "abc"}, "timeout"),
        ("https://a.example/api", {"timeout": 0}, "timeout"),
        ("https://a.example/api", {"timeout": "inf"}, "timeout"),
        ("https://a.example/api", {"rate_limit": "five"}, "rate_limit"),
        ("https://a.example/api", {"rate_limit": -5}, "rate_limit"),
        ("https://a.example/api", {"rate_limit": True}, "rate_limit"),
        ("https://a.example/api", {"max_retries": -1}, "max_retries"),
        ("https://a.example/api", {"max_retries": "2.5"}, "max_retries"),
        ("https://a.example/api", {"allow_insecure_http": "maybe"}, "allow_insecure_http"),
        ("http://a.example/api", {"allow_insecure_http": "false"}, "host"),  # text "false" is false
    ],
)
def test_bad_connection_fields_are_refused_naming_the_field(
    host: str, extras: dict[str, Any], field: str
) -> None:
    with pytest.raises(AutocallsValidationError) as err:
        build(host=host, extras=extras)
    assert err.value.field == field
    assert "secret-key" not in str(err.value)


@pytest.mark.parametrize(
    "host",
    ["http://127.0.0.1:8080/api", "http://localhost/api", "http://[::1]:80/api", "http://127.9.9.9/api"],
)
def test_plain_http_is_allowed_on_loopback(host: str) -> None:
    assert build(host=host).base_url == host


def test_plain_http_elsewhere_needs_an_explicit_opt_in() -> None:
    assert build(host="http://sim.internal/api/", extras={"allow_insecure_http": True}).base_url == (
        "http://sim.internal/api"
    )


def test_scheme_and_host_are_normalised_so_one_api_gets_one_pacer() -> None:
    assert build(host="HTTPS://App.AutoCalls.ai/api/").base_url == "https://app.autocalls.ai/api"


def test_a_missing_key_is_refused_before_any_request() -> None:
    with pytest.raises(AutocallsValidationError, match="^password: connection 'c' has no API key"):
        build_settings("c", None, None, {}, {})


def test_hook_construction_does_no_io() -> None:
    hook = AutocallsHook("does_not_exist")
    assert hook.autocalls_conn_id == "does_not_exist"
    assert "client" not in hook.__dict__
    assert "settings" not in hook.__dict__


def test_connection_form_for_airflow_2() -> None:
    behaviour = AutocallsHook.get_ui_field_behaviour()
    assert set(behaviour["hidden_fields"]) == {"schema", "port", "login", "extra"}
    assert behaviour["relabeling"] == {"host": "Base URL", "password": "API key"}
    pytest.importorskip("flask_appbuilder")
    widgets = AutocallsHook.get_connection_form_widgets()
    assert set(widgets) == {"timeout", "rate_limit", "max_retries", "allow_insecure_http"}


KEY = "sk-live-3f9a7c1e5b"


@pytest.mark.parametrize(
    ("key", "described"),
    [
        (KEY + "\n", "a line break at its end"),
        (KEY + "\r\n", "a line break inside it"),  # the \r comes first
        (" " + KEY, "a space at its start"),
        (KEY[:5] + " " + KEY[5:], "a space inside it"),
        (KEY + "\t", "a tab at its end"),
        (KEY[:5] + "\x00" + KEY[5:], "a control character inside it"),
        (KEY[:5] + "\x7f" + KEY[5:], "a control character inside it"),
        (KEY[:5] + "é" + KEY[5:], "a non-ASCII character inside it"),
        (KEY[:5] + "\u200b" + KEY[5:], "a non-ASCII character inside it"),  # zero-width space
        (KEY + "\u00a0", "a whitespace character at its end"),  # no-break space
    ],
    ids=["newline", "crlf", "leading-space", "inner-space", "tab", "nul", "del", "accent", "zwsp", "nbsp"],
)
def test_a_key_that_cannot_be_a_header_is_refused_without_showing_it(key: str, described: str) -> None:
    with pytest.raises(AutocallsValidationError) as err:
        build_settings("c", None, key, {}, {})
    assert err.value.field == "password"
    assert described in str(err.value)
    shown = f"{err.value} {err.value!r} {err.value.args!r} {err.value.__dict__!r}"
    for part in (KEY, KEY[:5], KEY[5:], repr(key)[1:-1], key.encode("unicode_escape").decode()):
        assert part not in shown
    assert err.value.__cause__ is None
    assert err.value.__context__ is None


def test_a_good_key_is_kept_as_it_is() -> None:
    assert build_settings("c", None, KEY, {}, {}).api_key == KEY


def test_settings_are_their_own_module_and_still_importable_from_the_hook_module() -> None:
    from airflow_provider_autocalls.hooks import _clients, _settings, autocalls

    assert autocalls.build_settings is _settings.build_settings
    assert autocalls.ClientSettings is _settings.ClientSettings
    assert autocalls.DEFAULT_BASE_URL == _settings.DEFAULT_BASE_URL
    # No circle: the clients module does not import the hook module.
    assert "airflow_provider_autocalls.hooks.autocalls" not in Path(_clients.__file__).read_text()
