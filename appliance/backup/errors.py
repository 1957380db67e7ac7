"""Why a backup file is refused; each a `WappError`, so the CLI maps it to an exit code once."""

from __future__ import annotations

from appliance.errors import EXIT_CONFIG, Conflict, WappError


class BackupCorrupt(WappError):
    """Truncated, altered, or not a wapp backup at all."""

    code = "BACKUP_CORRUPT"


class WrongPassphrase(WappError):
    code = "WRONG_PASSPHRASE"


class BackupTooNew(WappError):
    """Taken by a newer wapp: its schema is one this code cannot migrate from."""

    code = "BACKUP_TOO_NEW"
    exit_code = EXIT_CONFIG


class BoxInUse(Conflict):
    """The box has sessions or auth state: restoring over them needs --force."""

    code = "BOX_IN_USE"
