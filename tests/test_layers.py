"""Layers point one way: the HTTP API and the CLI sit on top of the domain, never below.

Services, webhooks, events, the database, auth, the stack and the rest answer the same
whoever calls them (an API request, a CLI command, a background task), so none of them
may import `appliance.api`: a service that took a FastAPI request or an API schema could
not be called by the CLI without dragging the web layer along, and a change to a route
could break a background task. Every import counts, also one inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "appliance"
# The layers allowed to import the API: the API itself and the CLI on top of it.
OUTER = ("api", "cli")
# Named so that a rename cannot quietly empty the walk.
DOMAIN_PACKAGES = (
    "services",
    "webhooks",
    "events",
    "db",
    "auth",
    "security",
    "stack",
    "watchdog",
    "metrics",
    "backup",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(source: str, module: str, *, is_package: bool) -> list[str]:
    """Every module `source` imports, absolute; `from a import b` counts as `a.b` too,
    since b may be a module (`from appliance import api`)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append(base)
            found.extend(f"{base}.{alias.name}" for alias in node.names)
    return found


def api_imports(source: str, module: str, *, is_package: bool = False) -> list[str]:
    return sorted(
        {
            name
            for name in _imported(source, module, is_package=is_package)
            if name == "appliance.api" or name.startswith("appliance.api.")
        }
    )


def _inner_modules() -> list[Path]:
    return sorted(
        path
        for path in ROOT.rglob("*.py")
        if path.relative_to(ROOT).parts[0] not in OUTER
        and path.relative_to(ROOT).parts[0] != "migrations"
    )


def test_the_walk_covers_every_domain_package() -> None:
    walked = {path.relative_to(ROOT).parts[0] for path in _inner_modules()}
    assert set(DOMAIN_PACKAGES) <= walked
    assert not walked & set(OUTER)


@pytest.mark.parametrize("path", _inner_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_below_the_api_imports_it(path: Path) -> None:
    found = api_imports(path.read_text(), _module_name(path), is_package=path.name == "__init__.py")
    assert found == [], f"{path.relative_to(ROOT.parent)} imports the API layer: {found}"


@pytest.mark.parametrize(
    "source",
    [
        "from appliance.api.auth import Principal",
        "import appliance.api.app",
        "from appliance import api",
        "from ..api import schemas",
        "from ..api.state import AppState",
        "def late():\n    from appliance.api.app import create_app\n",
    ],
)
def test_the_check_finds_every_way_of_importing_the_api(source: str) -> None:
    assert api_imports(source, "appliance.services.sessions") != []


@pytest.mark.parametrize(
    "source",
    [
        "from appliance.auth.principal import Principal",
        "from appliance import contracts",
        "from . import session_names",
        "import apiary",
        "from appliance.apis import x",
    ],
)
def test_the_check_lets_the_domain_import_itself(source: str) -> None:
    assert api_imports(source, "appliance.services.sessions") == []


def test_a_relative_import_resolves_from_a_package_init() -> None:
    # In appliance/services/__init__.py `..` is `appliance`; in a module of the same name
    # it would be one level higher.
    source = "from ..api import auth"
    assert api_imports(source, "appliance.services", is_package=True) == [
        "appliance.api",
        "appliance.api.auth",
    ]
    assert api_imports(source, "appliance.services.sessions") == [
        "appliance.api",
        "appliance.api.auth",
    ]
