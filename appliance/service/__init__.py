"""The appliance as a systemd service: `wapp service run` (the unit's ExecStart), its
journald logging and its readiness notification."""
