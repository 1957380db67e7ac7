"""Docs say what the code does: every `wapp ...` command README.md and docs/*.md name in
code (a span or a fenced block) is one the CLI has, checked against the real typer app.

A doc may describe a command before it exists only on a line that says "planned": an
operator who copies a command from the docs must not meet "No such command".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

from appliance.cli import commands
from appliance.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^\s*(```|~~~)")
_SPAN = re.compile(r"(`+)(.+?)\1")
# A command or group name as typer registers them; `<session>` or `...` ends the path.
_WORD = re.compile(r"^[a-z][a-z0-9-]*$")
# Where `wapp` is not the program: a user or group name (`-u wapp`, `chown wapp`).
_NOT_PROGRAM_AFTER = frozenset({"-u", "--user", "-g", "--group", "useradd", "chown", "User="})


@dataclass(frozen=True)
class Mention:
    doc: str
    line: int
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: wapp {' '.join(self.words)}"


def _code(text: str) -> Iterator[tuple[int, str, str]]:
    """(line number, the whole line, the code on it) for fenced blocks and code spans."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
        elif fenced:
            yield number, line, line
        else:
            for span in _SPAN.finditer(line):
                yield number, line, span.group(2)


def _words_after_wapp(code: str) -> Iterator[tuple[str, ...]]:
    for sep in (";", "|", "&&", "(", ")"):
        code = code.replace(sep, f" {sep} ")
    tokens = code.split()
    for at, token in enumerate(tokens):
        if token != "wapp" or (at > 0 and tokens[at - 1] in _NOT_PROGRAM_AFTER):
            continue
        words: list[str] = []
        rest = iter(tokens[at + 1 :])
        for word in rest:
            # The global option may come before the command: `wapp --config x.toml up`.
            if word in ("--config", "-c"):
                next(rest, None)
            elif word.startswith("--config="):
                pass
            elif _WORD.match(word):
                words.append(word)
            else:
                break
        if words and words[0] != "wapp":
            yield tuple(words)


def mentions(text: str, doc: str = "doc") -> list[Mention]:
    return [
        Mention(doc, number, words)
        for number, line, code in _code(text)
        if "planned" not in line.lower()
        for words in _words_after_wapp(code)
    ]


def _cli() -> object:
    commands.register(app)
    return typer.main.get_command(app)


def unknown(mentioned: list[Mention], cli: object) -> list[str]:
    """The mentions naming no command: each word descends while it names a group; after a
    command, the rest are its arguments (`wapp restart engine`, `wapp logs api`)."""
    missing: list[str] = []
    for mention in mentioned:
        node = cli
        for word in mention.words:
            # A group has `commands` (typer ships its own click, so no isinstance).
            subcommands: dict[str, object] | None = getattr(node, "commands", None)
            if subcommands is None:
                break
            found = subcommands.get(word)
            if found is None:
                missing.append(str(mention))
                break
            node = found
    return missing


def _all_doc_mentions() -> list[Mention]:
    return [
        found for doc in DOCS for found in mentions(doc.read_text(), str(doc.relative_to(ROOT)))
    ]


def test_every_command_the_docs_name_exists() -> None:
    assert unknown(_all_doc_mentions(), _cli()) == []


def test_the_docs_are_read() -> None:
    # A parser that found nothing would pass the test above whatever the docs say.
    named = {found.words[:2] for found in _all_doc_mentions()}
    assert ("up",) in named
    assert ("keys", "create") in named
    assert len(named) > 20


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("Run `wapp frobnicate` first.", ["doc:1: wapp frobnicate"]),
        ("Then `wapp keys frobnicate --all`.", ["doc:1: wapp keys frobnicate"]),
        ("```sh\nwapp up -d\nwapp --config /etc/x.toml nonsense\n```", ["doc:3: wapp nonsense"]),
        ("`sudo -u wapp wapp bogus`", ["doc:1: wapp bogus"]),
        ("`wapp up && wapp bogus-two`", ["doc:1: wapp bogus-two"]),
    ],
)
def test_a_command_that_does_not_exist_is_found(text: str, missing: list[str]) -> None:
    assert unknown(mentions(text), _cli()) == missing


@pytest.mark.parametrize(
    "text",
    [
        # Arguments of a command are no subcommands.
        "`wapp restart engine`, `wapp logs api`, `wapp send sales-1 +4915112345678 hi`",
        "`wapp keys create --role tenant`, `wapp webhooks` alone, `wapp sessions <name>`",
        # Not the program: Redis keys, paths, the unit, the user, prose outside code.
        "`wapp:events`, `/opt/wapp/.venv`, `wapp.service`, `chown wapp:wapp`, `-u wapp -f`",
        "wapp frobnicate in prose is no command line",
        # Said to be planned.
        "`wapp frobnicate` (planned) will do it.",
        "```\nwapp frobnicate   # planned\n```",
    ],
)
def test_what_is_no_command_line_is_not_checked(text: str) -> None:
    assert unknown(mentions(text), _cli()) == []
