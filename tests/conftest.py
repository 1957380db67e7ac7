"""Fixtures live in tests/fixtures/, one module per real service they start."""

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.settings",
    "tests.fixtures.stack",
    "tests.fixtures.database",
    "tests.fixtures.api",
]
