"""The OAuth scopes Flyswatter understands, as they appear in a token's ``scope`` claim."""

from enum import StrEnum


class Scope(StrEnum):
    projects_read = "projects:read"
    projects_write = "projects:write"
    issues_read = "issues:read"
    issues_write = "issues:write"


SCOPE_DESCRIPTIONS: dict[str, str] = {
    Scope.projects_read: "Read projects, members and labels",
    Scope.projects_write: "Create and manage projects, members and labels",
    Scope.issues_read: "Read issues, comments and history",
    Scope.issues_write: "Create and change issues and comments",
}

ADMIN_ROLE = "flyswatter-admin"
