"""
Does this send fit the template? Decided once per task from one ``get_templates`` answer.

:func:`template_spec` finds the template in the sender's listing (read with ``status="all"``, so
a pending template is reported as not approved rather than as missing) and refuses a template the
sender does not have or that is not ``approved``. The :class:`TemplateSpec` it returns checks the
variables of a send in microseconds, so a bulk send checks every row in its check pass:
an unknown name, a position beyond the count and a missing value are refused before any send.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_autocalls.exceptions import AutocallsAPIError, AutocallsValidationError
from airflow_provider_autocalls.validation import check_id, check_variables

if TYPE_CHECKING:
    from airflow_provider_autocalls.hooks.autocalls import AutocallsHook

_PLACEHOLDER: Final = re.compile(r"\{\{\s*(\d+)\s*\}\}")
#: How many of the sender's templates an error about a missing one lists.
_LISTED: Final = 10


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """
    One template as the sender's listing describes it, ready to check the variables of many sends.

    :param id: the template's id.
    :param name: its name as registered with Meta.
    :param status: ``approved``, ``pending`` or ``rejected``.
    :param names: the variable name of each position, in order (``names[0]`` is position 1).
    :param count: the highest position the template takes.
    :param required: the positions its body uses: each needs a non-blank value.
    """

    id: int
    name: str
    status: str
    names: tuple[str, ...]
    count: int
    required: frozenset[int]

    @property
    def description(self) -> str:
        """E.g. ``template 45 'appointment_reminder' (approved), variables 1=name, 2=date, 3=time``."""
        if self.count:
            labels = ", ".join(
                f"{position}={self.names[position - 1]}" if position <= len(self.names) else str(position)
                for position in range(1, self.count + 1)
            )
            variables = f"variables {labels}"
        else:
            variables = "no variables"
        return f"template {self.id} {self.name!r} ({self.status}), {variables}"

    def check(self, variables: Mapping[Any, Any] | None, field: str = "variables") -> dict[str, str] | None:
        """
        Return ``variables`` in the form the API takes if they fit this template.

        :param variables: keyed by position (``"1"``) or by the template's variable names.
        :param field: the name the error gives the variables (e.g. ``variables`` of a row).
        :raises AutocallsValidationError: a name the template does not have, a position beyond its
            count, one placeholder given twice, or a placeholder its body uses left without a value.
        """
        checked = check_variables(variables, field)
        by_position: dict[int, str] = {}
        for key, value in (checked or {}).items():
            position = self._position(key)
            if position is None:
                raise AutocallsValidationError(field, f"unknown variable {key!r}: {self.description}.")
            if position in by_position:
                raise AutocallsValidationError(
                    field,
                    f"variable {position} is given twice (by position and by name): {self.description}.",
                )
            by_position[position] = value
        missing = sorted(p for p in self.required if not by_position.get(p, "").strip())
        if missing:
            shown = ", ".join(f"{p}={self.names[p - 1]}" if p <= len(self.names) else str(p) for p in missing)
            raise AutocallsValidationError(field, f"no value for variable {shown}: {self.description}.")
        return checked

    def _position(self, key: str) -> int | None:
        if key.isascii() and key.isdigit() and str(int(key)) == key:
            position = int(key)
            return position if 1 <= position <= self.count else None
        try:
            return self.names.index(key) + 1
        except ValueError:
            return None


def template_spec(
    templates: Sequence[Mapping[str, Any]], template_id: Any, sender_id: Any = None
) -> TemplateSpec:
    """
    The template ``template_id`` from a sender's ``get_templates(sender_id, status="all")`` answer.

    :param templates: the listing (every status, so that "not approved" can be told from "missing").
    :param template_id: the template to send.
    :param sender_id: the sender, only to name it in errors.
    :raises AutocallsValidationError: (field ``template_id``) the sender has no such template, or
        it is not approved.
    :raises AutocallsAPIError: the listing is not in the documented shape.
    """
    wanted = check_id(template_id, "template_id")
    found = next((t for t in templates if isinstance(t, Mapping) and t.get("id") == wanted), None)
    sender = f"sender {sender_id}" if sender_id is not None else "the sender"
    if found is None:
        listed = "; ".join(_summary(t) for t in templates[:_LISTED] if isinstance(t, Mapping))
        more = f" (and {len(templates) - _LISTED} more)" if len(templates) > _LISTED else ""
        theirs = f"its templates: {listed}{more}" if listed else "it has no templates"
        raise AutocallsValidationError(
            "template_id", f"{sender} has no template {wanted}; {theirs}. Use one of these ids."
        )
    spec = _spec(found)
    if spec.status != "approved":
        raise AutocallsValidationError(
            "template_id",
            f"{spec.description} is not approved, so the API would refuse every send. Wait for Meta's "
            "approval (synced every 4 hours) or use an approved template.",
        )
    return spec


def read_template(hook: AutocallsHook, sender_id: int | str, template_id: int | str) -> TemplateSpec:
    """Read the sender's templates once (one request) and return :func:`template_spec`'s answer."""
    return template_spec(hook.get_templates(sender_id, status="all"), template_id, sender_id)


def _summary(template: Mapping[str, Any]) -> str:
    return f"{template.get('id')} {template.get('name')!r} ({template.get('status')})"


def _spec(template: Mapping[str, Any]) -> TemplateSpec:
    names = template.get("variables")
    if names is None:
        names = []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise AutocallsAPIError(
            f"Template {template.get('id')} in the listing has 'variables' {names!r}, not a list of names. "
            "Set check_template=False to send without the check.",
            status_code=200,
            response_body=dict(template),
        )
    body = template.get("body_text")
    used = {int(p) for p in _PLACEHOLDER.findall(body)} if isinstance(body, str) else set()
    count = max([len(names), *used])
    # Without a readable body every named variable is taken as used.
    required = frozenset(used) if isinstance(body, str) else frozenset(range(1, len(names) + 1))
    return TemplateSpec(
        id=int(template["id"]),
        name=str(template.get("name")),
        status=str(template.get("status")),
        names=tuple(names),
        count=count,
        required=required,
    )
