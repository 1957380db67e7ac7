"""The base of every model that is JSON over HTTP: camelCase on the wire, snake_case in
Python (design.md, Names).

Outside `appliance.api` because the services validate some of these bodies themselves
(the send bodies of `services/outgoing.py`, which the CLI builds too), and services
never import the API layer.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        # NaN and ±Infinity are no numbers a client means; JSON does not have them either.
        allow_inf_nan=False,
    )
