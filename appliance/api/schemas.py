"""Base of every HTTP model (defined in `appliance.camel`): camelCase on the wire, snake_case
in Python; and the input types several routes share (timestamps in queries, integer bounds)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Final

from pydantic import AwareDatetime, BeforeValidator
from pydantic_core import PydanticCustomError

# Re-exported for the routes: every HTTP model starts here.
from appliance.camel import ApiModel as ApiModel

# Every integer a client sends has both bounds: past them a value is refused with 422
# instead of overflowing SQLite's or Postgres' 64-bit columns (a 500), and the bounds
# show in the OpenAPI schema (a test walks it). Pacing's bounds are the contract's
# (`appliance/contracts.py`), which the engine sees.
MAX_SESSIONS_PER_KEY: Final = 100_000
MAX_MESSAGES_PER_DAY: Final = 100_000_000

_ISO_DATE: Final = re.compile(r"^\s*\d{4}-\d{2}-\d{2}")


def _iso_8601(value: object) -> object:
    # Pydantic reads a number, or a string of digits, as Unix seconds: `?since=0.5` would
    # silently mean 1970. A timestamp here is ISO 8601 text, nothing else.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise PydanticCustomError(
            "iso_datetime",
            "must be an ISO 8601 date-time such as 2026-01-31T12:00:00Z",
        )
    return value


# Without an offset, UTC is meant.
IsoDatetime = Annotated[datetime, BeforeValidator(_iso_8601)]
AwareIsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_8601)]


class ErrorBody(ApiModel):
    code: str
    message: str
    details: dict[str, object]


class ErrorResponse(ApiModel):
    """The single error shape of every endpoint."""

    success: bool = False
    error: ErrorBody
