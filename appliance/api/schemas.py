"""Base of every HTTP model: camelCase on the wire, snake_case in Python."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True
    )


class ErrorBody(ApiModel):
    code: str
    message: str
    details: dict[str, object]


class ErrorResponse(ApiModel):
    """The single error shape of every endpoint."""

    success: bool = False
    error: ErrorBody
