"""What the api process runs for webhooks: the secret box, the dispatcher, admin alerts.

Admin alerts are the `Alerter` (session states) and the `EngineRestartMonitor` (engine
restarts, from the heartbeats of the engines the stack runs); both run only when an
alert channel is configured.

Without a readable master key secrets can be neither stored nor used: the api still
starts (other routes work) and webhook routes answer 503 saying why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance.errors import ConfigError, ServiceUnavailable
from appliance.readiness import expected_engines
from appliance.security.keyring import MasterKeyring
from appliance.security.master_key import load_master_key
from appliance.settings import Settings
from appliance.webhooks.alerts import Alerter
from appliance.webhooks.crypto import SecretBox
from appliance.webhooks.dispatcher import Dispatcher
from appliance.webhooks.engine_restarts import EngineRestartMonitor

log = logging.getLogger("appliance.webhooks")


@dataclass
class WebhooksRuntime:
    box: SecretBox | None
    dispatcher: Dispatcher | None
    alerter: Alerter | None
    unavailable: str | None
    engine_restarts: EngineRestartMonitor | None = None

    @classmethod
    def start(
        cls,
        settings: Settings,
        *,
        writer: async_sessionmaker[AsyncSession],
        reader: async_sessionmaker[AsyncSession],
        redis: aioredis.Redis,
    ) -> WebhooksRuntime:
        try:
            # Checked now so that a missing or unreadable key disables webhooks up front.
            load_master_key(settings.master_key_path)
        except ConfigError as exc:
            log.warning("webhooks disabled: %s", exc.message)
            return cls(None, None, None, exc.message)
        # Read from disk as it changes: `wapp keys rotate-master` runs online.
        ring = MasterKeyring(settings.master_key_path)
        dispatcher = Dispatcher(settings.webhooks, writer=writer, reader=reader, master_key=ring)
        dispatcher.start()
        alerter = Alerter(settings.webhooks, reader, redis)
        alerter.start()
        # Polled as often as the engines write it: faster would only read the same value.
        engine_restarts = EngineRestartMonitor(
            alerter,
            redis,
            expected_engines(settings),
            poll_s=settings.engine.heartbeat_interval_s,
        )
        engine_restarts.start()
        return cls(SecretBox(ring), dispatcher, alerter, None, engine_restarts)

    async def stop(self) -> None:
        if self.engine_restarts is not None:
            await self.engine_restarts.stop()
        if self.alerter is not None:
            await self.alerter.stop()
        if self.dispatcher is not None:
            await self.dispatcher.stop()

    def secret_box(self) -> SecretBox:
        if self.box is None:
            raise ServiceUnavailable(f"webhooks need the master key: {self.unavailable}")
        return self.box
