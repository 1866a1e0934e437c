"""The text types every input string is declared with: what the databases can store and what
no protocol (headers, logs, URLs) chokes on.

PostgreSQL refuses U+0000 in text and the drivers refuse lone surrogates (UTF-16 halves that
are no character), while SQLite would store both; control characters in a one-line value end
up in headers, log lines and terminals. So every string that reaches the service, in a JSON
body, a query parameter, a path segment, a cursor or a token claim, is one of these types,
and a value that breaks them is a 422 naming its field, the same on every backend.

- ``SingleLine``: names, keys, titles, ids: no C0 or C1 control character (tab and newlines
  included), no line or paragraph separator, no lone surrogate.
- ``MultiLine``: descriptions and comment bodies: tab, line feed and carriage return are kept;
  every other control character and lone surrogates are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue

# C0 controls, DEL, C1 controls, the Unicode line and paragraph separators, and surrogates.
_NOT_SINGLE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# The same without tab, line feed and carriage return.
_NOT_MULTI_LINE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def _describe(character: str) -> str:
    code = ord(character)
    if 0xD800 <= code <= 0xDFFF:
        return f"a lone surrogate (U+{code:04X})"
    return f"a control character (U+{code:04X})"


def first_unsafe_character(value: str, *, multiline: bool = False) -> str | None:
    """The first character of ``value`` its kind of text may not hold, if any."""
    found = (_NOT_MULTI_LINE if multiline else _NOT_SINGLE_LINE).search(value)
    return found.group() if found else None


def replace_unsafe_characters(value: str) -> str:
    """``value`` with every character one-line text may not hold replaced by U+FFFD."""
    return _NOT_SINGLE_LINE.sub("\ufffd", value)


def single_line(value: str) -> str:
    bad = first_unsafe_character(value)
    if bad is not None:
        raise ValueError(f"one-line text may not contain {_describe(bad)}")
    return value


def not_blank(value: str) -> str:
    if value.isspace():
        raise ValueError("text may not be only whitespace")
    return value


def multi_line(value: str) -> str:
    bad = first_unsafe_character(value, multiline=True)
    if bad is not None:
        raise ValueError(
            f"text may not contain {_describe(bad)}; tab and newlines are the only controls kept"
        )
    return value


@dataclass(frozen=True, slots=True)
class _DocumentedAs:
    """Writes the refusal into the JSON schema too, so that clients and fuzzers generate text
    the service accepts (a lone surrogate cannot be written in a pattern; the validator alone
    refuses it). A type with a pattern of its own uses the validator only, with a pattern that
    already leaves out the control characters."""

    pattern: str

    def __get_pydantic_json_schema__(
        self, core_schema: Any, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema: dict[str, Any] = handler(core_schema)
        if schema.get("type") == "string":
            schema.setdefault("pattern", self.pattern)
        return schema


ONE_LINE_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029]*$"
MANY_LINES_PATTERN = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"
ONE_LINE = AfterValidator(single_line)


def _single_line_as_sent(value: Any) -> Any:
    return single_line(value) if isinstance(value, str) else value


# For a type that strips whitespace: checked as sent, before ``str.strip`` removes the controls
# it counts as whitespace (U+001C to U+001F, U+0085, U+2028, U+2029) from the ends unseen.
ONE_LINE_AS_SENT = BeforeValidator(_single_line_as_sent)
MANY_LINES = AfterValidator(multi_line)
# Refuses whitespace-only text but keeps the text as sent (Markdown reads leading spaces);
# one-line values strip instead (``StringConstraints(strip_whitespace=True, min_length=1)``).
NOT_BLANK = AfterValidator(not_blank)
ONE_LINE_DOCUMENTED = _DocumentedAs(ONE_LINE_PATTERN)
SingleLine = Annotated[str, ONE_LINE, ONE_LINE_DOCUMENTED]
MultiLine = Annotated[str, MANY_LINES, _DocumentedAs(MANY_LINES_PATTERN)]
# A type that also transforms (``strip_whitespace``) or has a pattern of its own puts its
# constraints first and the check last, ``Annotated[str, StringConstraints(...), ONE_LINE]``
# (``ONE_LINE_AS_SENT`` where the transformation could hide a control character):
# constraints written after an Annotated validator are checked on the value as it was before
# the transformation, and would lose their pattern in the JSON schema.
