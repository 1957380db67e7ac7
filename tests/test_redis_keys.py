"""Every Redis key is built in appliance/redis_keys.py, its templates match its functions,
and the engine reads the very same templates (the exported redis-keys.json)."""

from __future__ import annotations

import ast
import inspect
import re
import typing
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

import appliance
from appliance import redis_keys
from appliance.paths import GENERATED_DIR

APPLIANCE = Path(appliance.__file__).parent
ENGINE = GENERATED_DIR.parent.parent  # engine/src/generated -> engine
KEY_LITERAL = re.compile(rb"^wapp:\S")
# `wapp:` literals that are not Redis keys: domain separators of a hash and of an AEAD.
NOT_KEYS = {
    ("contracts.py", b"wapp:"),
    ("webhooks/crypto.py", b"wapp:webhook-secret"),
}


def _key_functions() -> dict[str, Callable[..., str]]:
    return {
        name: fn
        for name, fn in vars(redis_keys).items()
        if inspect.isfunction(fn) and fn.__module__ == redis_keys.__name__ and name != "pattern"
    }


def _key_constants() -> dict[str, str]:
    return {
        name.lower(): value
        for name, value in vars(redis_keys).items()
        if name.isupper() and isinstance(value, str) and name not in ("PREFIX",)
    }


def _sample(name: str, annotation: Any) -> tuple[object, str]:
    """An argument for a parameter and what it must read as inside the key."""
    if annotation is date:
        return date(2026, 1, 2), "20260102"
    if annotation is int:
        return 4242, "4242"
    if typing.get_origin(annotation) is typing.Literal:
        value = typing.get_args(annotation)[0]
        return value, str(value)
    return f"<{name}>", f"<{name}>"


def test_every_template_is_a_function_or_constant_and_nothing_is_undeclared() -> None:
    declared = set(redis_keys.TEMPLATES)
    assert declared == set(_key_functions()) | set(_key_constants())


@pytest.mark.parametrize("name", sorted(_key_functions()))
def test_each_function_builds_exactly_its_declared_template(name: str) -> None:
    fn = _key_functions()[name]
    hints = typing.get_type_hints(fn)
    args: dict[str, object] = {}
    expected = redis_keys.TEMPLATES[name]
    for param in inspect.signature(fn).parameters:
        value, shown = _sample(param, hints[param])
        args[param] = value
        assert "{" + param + "}" in expected, f"{name}: template lacks {{{param}}}"
        expected = expected.replace("{" + param + "}", shown)
    assert "{" not in expected, f"{name}: template has a parameter the function lacks"
    assert fn(**args) == expected


@pytest.mark.parametrize("name", sorted(_key_constants()))
def test_each_constant_is_its_declared_template(name: str) -> None:
    assert redis_keys.TEMPLATES[name] == _key_constants()[name]


def test_every_key_carries_the_prefix_and_no_two_templates_collide() -> None:
    keys = [t for n, t in redis_keys.TEMPLATES.items() if not n.endswith("consumer_group")]
    assert all(t.startswith(redis_keys.PREFIX) for t in keys)
    assert len(set(redis_keys.TEMPLATES.values())) == len(redis_keys.TEMPLATES)


def test_a_pattern_matches_every_key_of_its_template() -> None:
    assert redis_keys.pattern("auth_key") == "wapp:auth:*"
    assert redis_keys.pattern("engine_heartbeat_key") == "wapp:engine:*:heartbeat"
    assert redis_keys.pattern("events_stream") == "wapp:events"
    with pytest.raises(KeyError):
        redis_keys.pattern("no_such_key")


def _string_literals(tree: ast.AST) -> list[tuple[int, bytes]]:
    """Every str/bytes literal and f-string head, docstrings left out (they document keys)."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and id(node) not in docstrings:
            if isinstance(node.value, str):
                found.append((node.lineno, node.value.encode()))
            elif isinstance(node.value, bytes):
                found.append((node.lineno, node.value))
    return found


def test_no_module_but_redis_keys_spells_a_wapp_key() -> None:
    offenders = []
    for path in sorted(APPLIANCE.rglob("*.py")):
        relative = path.relative_to(APPLIANCE).as_posix()
        if relative == "redis_keys.py":
            continue
        for line, value in _string_literals(ast.parse(path.read_text(encoding="utf-8"))):
            if KEY_LITERAL.match(value) and (relative, value) not in NOT_KEYS:
                offenders.append(f"appliance/{relative}:{line}: {value!r}")
    assert offenders == [], "build these in appliance/redis_keys.py"


def test_the_grep_sees_f_strings_and_bytes(tmp_path: Path) -> None:
    """The check above would pass vacuously if it missed how keys are usually written."""
    source = (
        '"""wapp:doc"""\nk = f"wapp:qr:{s}"\nb = b"wapp:auth:"\nh = "wapp: help text"\n'
        'def f() -> None:\n    """wapp:doc"""\n'
    )
    hits = [v for _, v in _string_literals(ast.parse(source)) if KEY_LITERAL.match(v)]
    assert sorted(hits) == [b"wapp:auth:", b"wapp:qr:"]


def test_the_engine_reads_the_same_templates() -> None:
    exported = orjson.loads((GENERATED_DIR / "redis-keys.json").read_bytes())
    assert exported == redis_keys.TEMPLATES


def _without_comments(ts: str) -> str:
    return re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", "", ts, flags=re.DOTALL))


def test_no_engine_source_spells_a_wapp_key() -> None:
    """The engine fills keys from redis-keys.json (engine/src/keys.ts), never by hand."""
    sources = [*(ENGINE / "src").rglob("*.ts"), *(ENGINE / "sim").rglob("*.ts")]
    assert sources
    offenders = [
        f"{path.relative_to(ENGINE)}: {match}"
        for path in sources
        if "generated" not in path.parts
        for match in re.findall(
            r"""['"`]wapp:[^'"`]*""", _without_comments(path.read_text(encoding="utf-8"))
        )
    ]
    assert offenders == []


def test_every_template_the_engine_names_is_exported() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in (ENGINE / "src").rglob("*.ts"))
    named = set(re.findall(r"\b(?:templates|redisKeyTemplates)\.([a-z_]+)\b", text))
    assert named, "the engine reads its keys from the exported templates"
    assert named <= set(redis_keys.TEMPLATES)
