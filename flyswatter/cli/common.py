"""What every command does the same way: refuse in one line, read the settings or name the
variable that is wrong, bind a port or say which one is taken and how to choose another."""

from __future__ import annotations

import socket
import sys
from typing import NoReturn

from pydantic import ValidationError
from pydantic_settings import SettingsError

from flyswatter.config import Settings

# A setting that cannot be read at all (as opposed to one that is unsafe to run with).
EXIT_BAD_SETTING = 2


def refuse(message: str, code: int = 1) -> NoReturn:
    print(f"flyswatter: refusing to start: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def settings_or_exit(**overrides: object) -> Settings:
    """The settings, or one line naming the variable and what is wrong with it (exit 2).
    The value itself is never printed: it may be a URL with a password."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "FLYSWATTER_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        refuse(f"{name}: {message}", EXIT_BAD_SETTING)
    except SettingsError as exc:
        # pydantic-settings could not parse a list or mapping variable: name it.
        field = str(exc).split('"')[1] if '"' in str(exc) else "settings"
        refuse(f"FLYSWATTER_{field.upper()}: not valid JSON", EXIT_BAD_SETTING)


def listen_or_exit(host: str, port: int, how_to_change: str) -> socket.socket:
    """A socket bound to ``host:port``, or one line naming the port and how to pick another,
    before anything else is printed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        print(
            f"flyswatter: cannot listen on {host}:{port} ({exc.strerror}): {how_to_change}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
    return sock
