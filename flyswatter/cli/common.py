"""What every command does the same way: refuse in one line, read the settings or name the
variable that is wrong, bind a port or say which one is taken and how to choose another."""

from __future__ import annotations

import argparse
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


def fail(message: str, code: int = 1) -> NoReturn:
    """One line saying why a command that did start could not finish (exit 1)."""
    print(f"flyswatter: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def database_failed(doing: str, settings: Settings, exc: Exception) -> str:
    """One line on a database that failed a command: its address and the error's classes,
    never the driver's message, which may quote the URL, the SQL or its values."""
    from flyswatter.errors import database_error_summary

    return (
        f"{doing}: the database at {settings.database_address} failed "
        f"({database_error_summary(exc)}): unreachable, no access, or a statement refused"
    )


def port_number(text: str) -> int:
    """argparse type of a TCP port argument: 1 to 65535, else argparse's one-line usage error
    (an out-of-range port would otherwise end in ``socket.bind``'s OverflowError traceback)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is between 1 and 65535, not {port}")
    return port


def positive_int(text: str) -> int:
    """argparse type of a count (worker processes): at least 1, else a one-line usage error
    rather than the traceback of whatever receives it (Celery's click)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


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
