"""Where the appliance's own files are, relative to the installed source tree."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
ENGINE_DIR = REPO_DIR / "engine"
GENERATED_DIR = ENGINE_DIR / "src" / "generated"
MIGRATIONS_DIR = PACKAGE_DIR / "migrations"
