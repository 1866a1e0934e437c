"""The README's shell commands, as the tests and ``.ci/run`` read them.

A block the project runs word for word is named by an HTML comment on the line before its
fence (``<!-- command: test -->``). Standard library only: ``.ci/run`` calls this module
with the system Python before any virtualenv exists
(``python3 -m tests.support.readme test`` prints the ``test`` block).
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
_BLOCK = re.compile(
    r"(?:<!-- command: (?P<name>[\w-]+) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.DOTALL
)
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Block:
    name: str | None
    language: str
    text: str


@dataclass(frozen=True)
class SimpleCommand:
    """One command of a line: its ``NAME=value`` prefixes and its words."""

    environment: dict[str, str]
    argv: list[str]

    @property
    def program(self) -> str:
        return self.argv[0] if self.argv else ""


def blocks(readme: Path = README) -> list[Block]:
    text = readme.read_text(encoding="utf-8")
    return [Block(match["name"], match["lang"], match["body"]) for match in _BLOCK.finditer(text)]


def named(name: str, readme: Path = README) -> str:
    (block,) = [block for block in blocks(readme) if block.name == name]
    return block.text.strip()


def shell_lines(text: str) -> list[str]:
    """Lines as the shell reads them: continuations joined, comments and blanks dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


def simple_commands(line: str) -> list[SimpleCommand]:
    """The commands of a line joined by ``&&``, ``||``, ``;`` or ``|`` (no nesting: a
    ``$(...)`` stays inside its word)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[SimpleCommand] = []
    words: list[str] = []
    for token in [*lexer, ";"]:
        if token in (";", "&&", "||", "|", "&"):
            environment: dict[str, str] = {}
            while words and _ASSIGNMENT.match(words[0]):
                name, _, value = words.pop(0).partition("=")
                environment[name] = value
            if words or environment:
                commands.append(SimpleCommand(environment, words))
            words = []
        else:
            words.append(token)
    return commands


if __name__ == "__main__":
    print(named(sys.argv[1]))
