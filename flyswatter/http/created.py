"""What a route that creates answers: 201 with the new resource, its ``Location`` and ``ETag``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fastapi import status
from pydantic import BaseModel

from flyswatter.errors import problem_responses

Body = TypeVar("Body", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Created(Generic[Body]):
    """What a create staged in the transaction: the response body and its headers."""

    body: Body
    location: str
    etag: str


def creates(model: type[BaseModel], errors: dict[int | str, dict[str, Any]]) -> dict[str, Any]:
    """The route options of a POST that creates a ``model``: 201, or 409 on a conflict."""
    return {
        "status_code": status.HTTP_201_CREATED,
        "response_model": model,
        "responses": problem_responses(409) | errors,
    }
