"""Fixtures live in tests/fixtures/, one module per real service they start."""

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.settings",
    "tests.fixtures.database",
    "tests.fixtures.stack",
    "tests.fixtures.cli_stack",
    "tests.fixtures.api",
    "tests.fixtures.killable_redis",
    "tests.fixtures.sandbox",
]


import pytest  # noqa: E402

from appliance.auth import key_cache  # noqa: E402
from appliance.services import session_cache  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_row_caches() -> None:
    """Each test starts with no cached key or session rows (they live per process)."""
    key_cache.clear()
    session_cache.clear()
