"""Where the stack's files live: everything under the data dir, nothing elsewhere."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ConfigError
from appliance.paths import secure_data_dir
from appliance.settings import Settings

# sun_path is 108 bytes on Linux including the trailing NUL.
MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class StackLayout:
    data_dir: Path
    run_dir: Path
    logs_dir: Path
    redis_dir: Path

    @classmethod
    def of(cls, settings: Settings) -> StackLayout:
        return cls(
            data_dir=settings.data_dir,
            run_dir=settings.run_dir,
            logs_dir=settings.data_dir / "logs",
            redis_dir=settings.redis_socket_path.parent,
        )

    @property
    def supervisord_conf(self) -> Path:
        return self.run_dir / "supervisord.conf"

    @property
    def applied_config(self) -> Path:
        """The copy of the config file the running stack's programs read (`wapp up`/`reload`
        write it): a crash-restart, `wapp restart` or a broken edit of the operator's file
        never changes what runs; `wapp reload` does, on purpose."""
        return self.run_dir / "config.toml"

    @property
    def supervisor_socket(self) -> Path:
        return self.run_dir / "supervisor.sock"

    @property
    def supervisor_url(self) -> str:
        return f"unix://{self.supervisor_socket}"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "supervisord.pid"

    @property
    def supervisord_log(self) -> Path:
        return self.logs_dir / "supervisord.log"

    @property
    def redis_conf(self) -> Path:
        return self.redis_dir / "redis.conf"

    def program_log(self, program: str) -> Path:
        return self.logs_dir / f"{program}.log"

    def check_socket_paths(self, settings: Settings) -> None:
        for path in (self.supervisor_socket, settings.redis_socket_path):
            if len(str(path).encode()) > MAX_SOCKET_PATH:
                raise ConfigError(
                    f"general.data_dir: {self.data_dir} is too long for the unix socket {path} "
                    f"(at most {MAX_SOCKET_PATH} bytes)",
                    details={"field": "general.data_dir"},
                )

    def make_dirs(self, settings: Settings) -> None:
        # 0700, and an existing wider one tightened (refused when another user's).
        secure_data_dir(self.data_dir)
        # Sockets and the Redis data are the appliance's alone.
        self.run_dir.mkdir(mode=0o700, exist_ok=True)
        if settings.redis.managed:
            self.redis_dir.mkdir(mode=0o700, exist_ok=True)
        self.logs_dir.mkdir(mode=0o750, exist_ok=True)
        if settings.sandbox.enabled:
            settings.sandbox_data_dir.mkdir(mode=0o700, exist_ok=True)
