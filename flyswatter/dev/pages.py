"""The development identity provider's HTML: the login page and its error page."""

from __future__ import annotations

import html

from starlette.responses import HTMLResponse

from flyswatter.dev.realm import DevRealm

# The login page: plain HTML, no script, nothing loaded from anywhere. Its field ids are
# Keycloak's (username, password, kc-login), so one browser test signs in on either.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
STYLE = (
    "body{font-family:sans-serif;max-width:22rem;margin:4rem auto;padding:0 1rem}"
    "label,input,button{display:block;width:100%;margin:.3rem 0}"
    "input,button{padding:.5rem;box-sizing:border-box}.error{color:#b00}"
)


def page(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)


def html_document(title: str, content: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{content}</body></html>"
    )


def login_page(realm: DevRealm, action: str, error: str | None) -> str:
    users = ", ".join(
        html.escape(name) for name in realm.users if not name.startswith("service-account-")
    )
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return html_document(
        f"Sign in to {realm.name}",
        f"<h1>Sign in to {html.escape(realm.name)}</h1>"
        "<p>Development identity provider: the realm file's demo users "
        f"({users}) with their password from keycloak/flyswatter-realm.json.</p>"
        f"{message}"
        f'<form method="post" action="{html.escape(action)}">'
        '<label for="username">Username</label>'
        '<input id="username" name="username" autocomplete="username" autofocus required>'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password"'
        ' autocomplete="current-password" required>'
        '<button id="kc-login" type="submit">Sign in</button></form>',
    )


def error_page(description: str) -> str:
    return html_document(
        "Sign-in error",
        f'<h1>We are sorry...</h1><p class="error" role="alert">{html.escape(description)}</p>',
    )
