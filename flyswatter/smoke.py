"""``flyswatter smoke``: checks a deployed service end to end, as its operators would by hand.

Health, readiness, then a round trip through the API in a scratch project of its own (create
an issue, read it back with its ETag, transition it, delete it), and the project removed again.
One line per check and a summary; the exit code is 0 only when every check passed. The token
(given, or obtained with client credentials from the token endpoint the service's OpenAPI
document names) never appears in the output.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

TOKEN_ENV = "FLYSWATTER_SMOKE_TOKEN"  # noqa: S105 (the variable's name)
CLIENT_ID_ENV = "FLYSWATTER_SMOKE_CLIENT_ID"
CLIENT_SECRET_ENV = "FLYSWATTER_SMOKE_CLIENT_SECRET"  # noqa: S105 (the variable's name)
TOKEN_URL_ENV = "FLYSWATTER_SMOKE_TOKEN_URL"  # noqa: S105 (the variable's name)


class CheckFailed(Exception):
    """A check did not hold; the message is its short reason."""


@dataclass
class SmokeRun:
    """The checks run so far, printed as they finish; secrets are masked in every line."""

    out: TextIO
    secrets: list[str] = field(default_factory=list)
    passed: int = 0
    failed: list[str] = field(default_factory=list)

    def report(self, name: str, ok: bool, reason: str, ms: float) -> None:
        for secret in self.secrets:
            reason = reason.replace(secret, "***")  # before it is cut short, or a piece shows
        line = f"{name:<16} {'ok' if ok else 'FAILED':<7} {reason[:160]:<60} {ms:7.0f} ms"
        print(line.rstrip(), file=self.out, flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)

    @contextmanager
    def check(self, name: str) -> Iterator[list[str]]:
        """Time the block; what it appends is the reason printed on success."""
        reason: list[str] = []
        started = time.perf_counter()
        try:
            yield reason
        except CheckFailed as failure:
            self.report(name, False, str(failure), (time.perf_counter() - started) * 1000)
            raise
        except httpx.HTTPError as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.report(name, False, detail, (time.perf_counter() - started) * 1000)
            raise CheckFailed(detail) from exc
        self.report(name, True, " ".join(reason), (time.perf_counter() - started) * 1000)


def expect(response: httpx.Response, status: int) -> dict[str, Any]:
    """The JSON body of a response with this status, else the check fails with its problem."""
    if response.status_code != status:
        try:
            body = response.json()
        except ValueError:
            body = None
        detail = body.get("detail") or body.get("title") if isinstance(body, dict) else None
        message = f"{response.status_code} (expected {status})"
        raise CheckFailed(f"{message}: {detail}" if detail else message)
    if status == 204 or not response.content:
        return {}
    body = response.json()
    return body if isinstance(body, dict) else {}


def discovered_token_url(client: httpx.Client) -> str:
    """The client-credentials token endpoint the service's OpenAPI document names."""
    schema = expect(client.get("/openapi.json"), 200)
    try:
        flows = schema["components"]["securitySchemes"]["keycloak"]["flows"]
        return str(flows["clientCredentials"]["tokenUrl"])
    except (KeyError, TypeError):
        raise CheckFailed("the service names no token endpoint; pass --token-url") from None


def client_credentials_token(
    client: httpx.Client, token_url: str, client_id: str, client_secret: str
) -> str:
    response = client.post(
        token_url,
        data={"grant_type": "client_credentials"},
        auth=(client_id, client_secret),
    )
    if response.status_code != 200:
        try:
            body = response.json()
        except ValueError:
            body = {}
        error = (
            body.get("error_description") or body.get("error") if isinstance(body, dict) else None
        )
        raise CheckFailed(f"token endpoint answered {response.status_code}: {error or 'no token'}")
    token = response.json().get("access_token")
    if not isinstance(token, str) or not token:
        raise CheckFailed("token endpoint answered without an access_token")
    return token


def scratch_project_key() -> str:
    """A key nobody else holds: deleted projects keep theirs, so every run draws a new one."""
    return "SMK" + secrets.token_hex(4).upper()[:7]


def round_trip(client: httpx.Client, run: SmokeRun, project_key: str) -> None:
    with run.check("create issue") as reason:
        issue = expect(
            client.post(
                f"/api/v1/projects/{project_key}/issues",
                json={"title": "flyswatter smoke check", "description": "Removed by the check."},
            ),
            201,
        )
        issue_key = str(issue["key"])
        reason.append(issue_key)
    with run.check("read issue") as reason:
        response = client.get(f"/api/v1/issues/{issue_key}")
        read = expect(response, 200)
        etag = response.headers.get("ETag")
        if read.get("title") != issue.get("title") or not etag:
            raise CheckFailed("the issue read back differs, or has no ETag")
        reason.append(f"ETag {etag}")
    with run.check("transition") as reason:
        response = client.post(
            f"/api/v1/issues/{issue_key}/transitions",
            json={"to": "in_progress"},
            headers={"If-Match": etag},
        )
        moved = expect(response, 200)
        if moved.get("status") != "in_progress":
            raise CheckFailed(f"status is {moved.get('status')}, expected in_progress")
        etag = response.headers.get("ETag", etag)
        reason.append("open -> in_progress")
    with run.check("delete issue") as reason:
        expect(client.delete(f"/api/v1/issues/{issue_key}", headers={"If-Match": etag}), 204)
        expect(client.get(f"/api/v1/issues/{issue_key}"), 404)
        reason.append("gone (404)")


def smoke(
    url: str,
    *,
    token: str | None,
    credentials: tuple[str, str] | None,
    token_url: str | None,
    timeout: float,
    out: TextIO,
) -> bool:
    """Run every check against ``url``; True when all passed."""
    run = SmokeRun(out, secrets=[value for value in (token, *(credentials or ())[1:]) if value])
    started = time.perf_counter()
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout) as client:
        try:
            for path in ("/healthz", "/readyz"):
                with run.check(path.strip("/")) as reason:
                    reason.append(str(expect(client.get(path), 200).get("status", "")))
            if credentials is not None:
                with run.check("token") as reason:
                    endpoint = token_url or discovered_token_url(client)
                    token = client_credentials_token(client, endpoint, *credentials)
                    run.secrets.append(token)
                    reason.append(f"client credentials of {credentials[0]}")
            client.headers["Authorization"] = f"Bearer {token}"
            with run.check("whoami") as reason:
                reason.append(str(expect(client.get("/api/v1/users/me"), 200).get("id", "")))
            exercise_scratch_project(client, run)
        except CheckFailed:
            pass
    total = len(run.failed) + run.passed
    elapsed = (time.perf_counter() - started) * 1000
    verdict = "passed" if not run.failed else f"FAILED ({', '.join(run.failed)})"
    print(f"smoke {verdict}: {run.passed}/{total} checks ok in {elapsed:.0f} ms", file=out)
    return not run.failed


def exercise_scratch_project(client: httpx.Client, run: SmokeRun) -> None:
    """Create the scratch project, run the round trip in it, and remove it whatever happened."""
    key = scratch_project_key()
    with run.check("create project") as reason:
        expect(client.post("/api/v1/projects", json={"key": key, "name": "Smoke check"}), 201)
        reason.append(key)
    try:
        round_trip(client, run, key)
    finally:
        with run.check("remove project") as reason:
            expect(client.delete(f"/api/v1/projects/{key}"), 204)
            reason.append(f"{key} deleted")


def add_smoke_command(commands: Any) -> None:
    """``flyswatter smoke``'s options, on the CLI's subcommand parsers."""
    parser = commands.add_parser(
        "smoke", help="check a running service end to end (health, readiness, an API round trip)"
    )
    parser.add_argument("--url", required=True, help="the service's base URL")
    parser.add_argument(
        "--token", default=os.environ.get(TOKEN_ENV), help=f"a bearer token (or {TOKEN_ENV})"
    )
    parser.add_argument(
        "--client-id",
        default=os.environ.get(CLIENT_ID_ENV),
        help=f"a service-account client, for a client-credentials token (or {CLIENT_ID_ENV})",
    )
    parser.add_argument(
        "--client-secret",
        default=os.environ.get(CLIENT_SECRET_ENV),
        help=f"its secret (better: {CLIENT_SECRET_ENV}, out of the process list)",
    )
    parser.add_argument(
        "--token-url",
        default=os.environ.get(TOKEN_URL_ENV),
        help="the token endpoint (default: the one the service's OpenAPI document names)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.set_defaults(handler=cmd_smoke)


def cmd_smoke(args: argparse.Namespace) -> None:
    credentials = None
    if not args.token:
        if not (args.client_id and args.client_secret):
            sys.exit(
                f"flyswatter smoke: give --token ({TOKEN_ENV}) or --client-id and "
                f"--client-secret ({CLIENT_ID_ENV}, {CLIENT_SECRET_ENV})"
            )
        credentials = (args.client_id, args.client_secret)
    passed = smoke(
        args.url,
        token=args.token or None,
        credentials=credentials,
        token_url=args.token_url,
        timeout=args.timeout,
        out=sys.stdout,
    )
    sys.exit(0 if passed else 1)
