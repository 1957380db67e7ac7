#!/usr/bin/env bash
# Local install of wapp in this checkout: venv with the pinned Node 24 runtime, the engine
# built, ./config.toml with a generated master key, migrations, then the stack started
# detached. Idempotent: a second run changes nothing and succeeds.
# (The VPS mode with systemd and a service user comes later; `--local` is what this does.)
set -euo pipefail
WAPP_ROOT=$(cd "$(dirname "$0")" && pwd)
cd "$WAPP_ROOT"

for arg in "$@"; do
  case "$arg" in
    --local) ;;
    -h|--help) echo "usage: ./install.sh [--local]"; exit 0 ;;
    *) echo "unknown option: $arg (usage: ./install.sh [--local])" >&2; exit 2 ;;
  esac
done

. scripts/lib/bootstrap.sh
ensure_system_packages
ensure_venv "."
ensure_engine_built

wapp="$VENV/bin/wapp"
say "configuration"
"$wapp" --config "$WAPP_ROOT/config.toml" init --local
say "database migrations"
"$wapp" --config "$WAPP_ROOT/config.toml" db upgrade
say "starting the stack"
if "$wapp" --config "$WAPP_ROOT/config.toml" status >/dev/null 2>&1; then
  echo "already running"
else
  "$wapp" --config "$WAPP_ROOT/config.toml" up --detach
fi
"$wapp" --config "$WAPP_ROOT/config.toml" keys bootstrap-admin
"$wapp" --config "$WAPP_ROOT/config.toml" status
