"""Support code for tests lives in tests/fixtures/; no test module imports another, and
there is one way to wait (tests/fixtures/waiting.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).parent
WAIT_HELPER = re.compile(r"^_*(wait_for|wait_until|eventually|poll_until)(_\w+)?$")


def _python_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def _imported_modules(tree: ast.AST) -> set[str]:
    """Every module an import names, `from tests import x` counted as `tests.x`."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.level:
                found.add(f"<relative>.{node.module}")
            else:
                found.add(node.module)
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom):  # `from . import x`
            found |= {f"<relative>.{alias.name}" for alias in node.names}
    return found


def _offending_imports(tree: ast.AST) -> set[str]:
    """Imports of anything under tests/ but tests.fixtures, and any relative import."""
    return {
        name
        for name in _imported_modules(tree)
        if name.startswith("<relative>")
        or (
            name.startswith("tests.")
            and not name.startswith("tests.fixtures.")
            and name != "tests.fixtures"
        )
    }


def test_no_test_module_imports_another_and_support_code_is_in_fixtures() -> None:
    offenders = {
        path.relative_to(TESTS).as_posix(): sorted(bad)
        for path in _python_files()
        if (bad := _offending_imports(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert offenders == {}, "move what is shared into tests/fixtures/ and import it from there"


def test_the_top_level_holds_only_test_modules() -> None:
    loose = [
        p.name
        for p in TESTS.glob("*.py")
        if not p.name.startswith("test_") and p.name not in ("conftest.py", "__init__.py")
    ]
    assert loose == [], "support modules belong in tests/fixtures/"


def test_there_is_one_wait_helper() -> None:
    defined = [
        f"{path.relative_to(TESTS).as_posix()}:{node.name}"
        for path in _python_files()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and WAIT_HELPER.match(node.name)
    ]
    assert sorted(defined) == ["fixtures/waiting.py:wait_for", "fixtures/waiting.py:wait_for_async"]


def test_the_import_check_sees_each_way_of_importing_a_test_module() -> None:
    """The checks above would pass vacuously if they missed how an import is written."""
    source = "\n".join(
        [
            "import tests.test_a",
            "from tests.test_b import helper",
            "from tests import test_c",
            "from .test_d import x",
            "from . import test_e",
            "from tests.fixtures.api import auth",
            "from tests.fixtures import waiting",
            "import appliance.redis_keys",
        ]
    )
    assert _offending_imports(ast.parse(source)) == {
        "tests.test_a",
        "tests.test_b",
        "tests.test_b.helper",
        "tests.test_c",
        "<relative>.test_d",
        "<relative>.test_e",
    }
