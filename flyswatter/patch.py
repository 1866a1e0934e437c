"""The fields of a PATCH body: absent, a field is unchanged; sent, it is the new value.

A field the resource always has (a title, a state, a flag) is declared with ``unless_sent``:
its type has no None, so ``null`` is a 422 naming it, rather than read as "unchanged", which
would answer 200 to a change that was never made. A field that may be empty (an assignee, a
due date) keeps ``| None``, and ``null`` clears it.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Field


def _no_default(schema: dict[str, Any]) -> None:
    # A default of null would tell clients that null is a value of the field.
    schema.pop("default", None)


def unless_sent(**field: Any) -> Any:
    """A field of a change that is None in the model when absent, and never null when sent."""
    return Field(default=None, schema_extra={"json_schema_extra": _no_default}, **field)
