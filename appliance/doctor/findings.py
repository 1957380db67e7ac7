"""One finding of `wapp doctor`: what was checked, what was seen, and what to do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Level = Literal["ok", "info", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    area: str
    check: str
    level: Level
    detail: str
    # What the operator should do; None when nothing.
    action: str | None = None

    @property
    def needs_action(self) -> bool:
        return self.level in ("warn", "fail")


def ok(area: str, check: str, detail: str) -> Finding:
    return Finding(area, check, "ok", detail)


def info(area: str, check: str, detail: str) -> Finding:
    return Finding(area, check, "info", detail)


def warn(area: str, check: str, detail: str, action: str) -> Finding:
    return Finding(area, check, "warn", detail, action)


def fail(area: str, check: str, detail: str, action: str) -> Finding:
    return Finding(area, check, "fail", detail, action)
