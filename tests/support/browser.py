"""Headless Chromium signing in from Swagger UI, for the browser flows of both identity providers.

Playwright drives Debian's ``chromium`` (``/usr/bin/chromium``): Playwright's own browser
download needs a CDN these machines cannot reach, and its Python package ships the driver.
Every request the browser makes beyond the allowed origins is refused and recorded, so a page
that needs the internet fails the test instead of loading slowly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Route, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 30_000


@dataclass
class Browser:
    page: Page
    refused: list[str] = field(default_factory=list)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@contextmanager
def chromium(*allowed_urls: str) -> Iterator[Browser]:
    """A fresh headless Chromium whose pages may reach only the origins of ``allowed_urls``."""
    if not CHROMIUM.exists():
        # One line naming the package, as every test needing a Debian program says it.
        pytest.skip(f"needs {CHROMIUM} (Debian package chromium)")
    allowed = {_origin(url) for url in allowed_urls}
    with sync_playwright() as playwright:
        # Root cannot use Chromium's sandbox; the browser only ever loads loopback pages here.
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            context = launched.new_context()
            context.set_default_timeout(TIMEOUT_MS)
            browser = Browser(page=context.new_page())

            def only_allowed(route: Route) -> None:
                url = route.request.url
                if url.startswith(("data:", "blob:")) or _origin(url) in allowed:
                    route.continue_()
                else:
                    browser.refused.append(url)
                    route.abort()

            context.route("**/*", only_allowed)
            yield browser
        finally:
            launched.close()


def sign_in_from_docs(page: Page, docs_url: str, username: str, password: str) -> None:
    """Open /docs, Authorize with the authorization-code flow, sign in on the login page."""
    page.goto(docs_url)
    page.locator(".scheme-container button.authorize").click()
    flow = page.locator(".auth-container").filter(has_text="authorizationCode")
    with page.expect_popup() as popup_info:
        flow.locator(".auth-btn-wrapper button.authorize").click()
    login = popup_info.value
    login.locator("#username").fill(username)
    login.locator("#password").fill(password)
    with login.expect_event("close"):
        login.locator("#kc-login").click()
    flow.locator(".auth-btn-wrapper button", has_text="Logout").wait_for()
    page.locator(".modal-ux button.close-modal").click()


@dataclass(frozen=True)
class TriedOut:
    status: int
    body: object


def try_it_out(
    page: Page,
    operation_id: str,
    tag: str,
    *,
    parameters: dict[str, str] | None = None,
    body: object | None = None,
) -> TriedOut:
    """Swagger UI's "Try it out" on one operation, as a person would fill it in."""
    operation = page.locator(f"#operations-{tag}-{operation_id}")
    operation.locator(".opblock-summary").first.click()
    operation.get_by_role("button", name="Try it out").click()
    for name, value in (parameters or {}).items():
        operation.locator(f'tr[data-param-name="{name}"] input').fill(value)
    if body is not None:
        operation.locator("textarea.body-param__text").fill(json.dumps(body))
    operation.get_by_role("button", name="Execute").click()
    row = operation.locator(".live-responses-table .response").first
    row.wait_for()
    status = int(row.locator(".response-col_status").inner_text().strip())
    text = row.locator(".response-col_description pre").first.inner_text()
    try:
        parsed: object = json.loads(text)
    except ValueError:
        parsed = text
    return TriedOut(status=status, body=parsed)


def sign_in_as_maria_and_file_an_issue(app_url: str, identity_url: str, project_key: str) -> None:
    """The whole browser story: /docs, Authorize, maria signs in, two calls from the page."""
    with chromium(app_url, identity_url) as browser:
        page = browser.page
        sign_in_from_docs(page, f"{app_url}/docs", "maria", "flyswatter")
        me = try_it_out(page, "read_me_api_v1_users_me_get", "users")
        assert me.status == 200, me.body
        assert isinstance(me.body, dict)
        assert me.body["username"] == "maria"
        created = try_it_out(
            page,
            "create_issue_api_v1_projects__key__issues_post",
            "issues",
            parameters={"key": project_key},
            body={"title": "Filed from Swagger UI", "type": "bug", "priority": "high"},
        )
        assert created.status == 201, created.body
        assert isinstance(created.body, dict)
        assert created.body["key"].startswith(f"{project_key}-")
        assert created.body["reporter"]["username"] == "maria"
        assert browser.refused == [], "the page reached beyond the service and its Keycloak"
