"""Where the appliance's own files are, and the modes its private files must have."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from appliance.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
ENGINE_DIR = REPO_DIR / "engine"
GENERATED_DIR = ENGINE_DIR / "src" / "generated"
MIGRATIONS_DIR = PACKAGE_DIR / "migrations"


# --- modes of the appliance's private files ---------------------------------------------
# The data dir holds the database, the master key, Redis' AOF and media: nobody but the
# appliance's user reads any of it. Created 0700; found wider, tightened when ours.
DATA_DIR_MODE = 0o700
# SQLite gives its -wal and -shm files the database file's mode, so a 0600 database
# makes all three 0600.
DB_FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _not_ours(path: Path, mode: int, uid: int) -> ConfigError:
    return ConfigError(
        f"{path} is mode {mode:04o} and owned by uid {uid}, not by this user "
        f"(uid {os.geteuid()}): it must be private to the appliance's user; "
        f"chown it to that user, or chmod {0o700 if path.is_dir() else 0o600:o} it",
        details={"path": str(path), "mode": f"{mode:04o}", "owner": uid},
    )


def tighten(path: Path, mode: int) -> None:
    """Give `path` at most `mode`: chmod when ours, refuse (ConfigError) when not ours."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return
    current = stat.S_IMODE(found.st_mode)
    if current & ~mode == 0:
        return
    if found.st_uid != os.geteuid():
        raise _not_ours(path, current, found.st_uid)
    try:
        os.chmod(path, current & mode)
    except OSError as exc:
        raise ConfigError(
            f"cannot make {path} private (chmod {mode:o}): {exc.strerror}",
            details={"path": str(path)},
        ) from exc


def secure_data_dir(data_dir: Path) -> None:
    """Create the data dir 0700, or tighten an existing one (refused when not ours)."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=DATA_DIR_MODE)
    except OSError as exc:
        raise ConfigError(
            f"general.data_dir: cannot create {data_dir}: {exc.strerror}",
            details={"field": "general.data_dir"},
        ) from exc
    tighten(data_dir, DATA_DIR_MODE)


def secure_sqlite_files(database: Path, *, data_dir: Path) -> None:
    """Before SQLite opens `database`: the file exists 0600 and its side files are 0600.

    Created here (empty is a valid SQLite database) so it is never readable by others,
    not even between SQLite creating it with the umask's mode and a later chmod. In the
    data dir, the dir itself is secured first.
    """
    if database.parent == data_dir:
        secure_data_dir(data_dir)
    # O_EXCL: never open (and so never close) an existing database. Closing any fd on
    # it drops every POSIX lock this process holds there, among them the SHARED locks
    # of its live WAL connections; another process (a `wapp` command) closing its own
    # connection then believes it is the last, checkpoints and deletes the -wal and
    # -shm under them, and every later query here fails with "disk I/O error".
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DB_FILE_MODE)
    except FileExistsError:
        pass
    except OSError:
        return  # e.g. no such dir: SQLite's own open fails next, with the driver's error
    else:
        os.close(fd)
    for path in (database, *(Path(f"{database}{side}") for side in SQLITE_SIDE_FILES)):
        tighten(path, DB_FILE_MODE)
