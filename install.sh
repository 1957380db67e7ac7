#!/usr/bin/env bash
# wapp installer.
#   As root on a systemd host (the VPS mode): code and venv in /opt/wapp, config in
#   /etc/wapp/config.toml, data in /var/lib/wapp, user `wapp`, unit wapp.service, `wapp` on
#   the PATH. Also piped: curl -fsSL URL | sudo bash -s -- [options]
#   --local (the default as non-root or without systemd): this checkout, ./config.toml, the
#   stack started detached.
# Idempotent: a second run changes nothing. docs/operations.md, Installing.
# Everything is inside main(), called on the last line: a truncated download runs nothing.

main() {
  set -euo pipefail
  local usage="usage: install.sh [--local] [--source DIR|TARBALL|GIT-URL] [--root DIR]
                  [--upgrade | --uninstall [--purge]] [--force-os] [--sandbox] [--port N]"
  local mode="" source="" root="" action=install purge=0 force_os=0 sandbox=0 port=8080
  while [ $# -gt 0 ]; do
    case "$1" in
      --local) mode=local ;;
      --source) source="${2:?--source needs a value}"; shift ;;
      --root) root="${2:?--root needs a directory}"; shift ;;
      --upgrade) action=upgrade ;;
      --uninstall) action=uninstall ;;
      --purge) purge=1 ;;
      --force-os) force_os=1 ;;
      --sandbox) sandbox=1 ;;
      --port) port="${2:?--port needs a number}"; shift ;;
      -h|--help) echo "$usage"; return 0 ;;
      *) echo "unknown option: $1" >&2; echo "$usage" >&2; return 2 ;;
    esac
    shift
  done
  if [ "$purge" = 1 ] && [ "$action" != uninstall ]; then
    echo "--purge goes with --uninstall" >&2; return 2
  fi

  # Where this script lives, when it is a file (not piped into bash).
  local here=""
  if [ -n "${BASH_SOURCE[0]:-}" ] && [ -f "${BASH_SOURCE[0]}" ]; then
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  fi
  if [ -z "$mode" ]; then
    if [ -n "$root" ] || { [ "$(id -u)" -eq 0 ] && [ -d /run/systemd/system ]; }; then
      mode=system
    else
      mode=local
    fi
  fi

  if [ "$mode" = local ]; then
    [ "$action" = install ] || { echo "--upgrade/--uninstall are for the system mode" >&2; return 2; }
    [ -n "$here" ] || { echo "--local runs from a checkout: ./install.sh --local" >&2; return 2; }
    install_local "$here"
    return
  fi

  [ "$(id -u)" -eq 0 ] || { echo "the system install needs root (or --local)" >&2; return 1; }
  local staged
  if [ "$action" = uninstall ]; then
    # Uninstalling needs no new code: the installed scripts (or these) know how.
    staged="${here:-$root/opt/wapp}"
  else
    staged=$(fetch_source "$source" "$here")
  fi
  # The rest comes with the code being installed, so an upgrade runs its own steps.
  # shellcheck source=scripts/lib/system.sh
  . "$staged/scripts/lib/system.sh"
  WAPP_SYS_ROOT="$root" WAPP_SYS_SANDBOX="$sandbox" WAPP_SYS_PORT="$port" \
    WAPP_SYS_FORCE_OS="$force_os" WAPP_SYS_PURGE="$purge" \
    system_main "$action" "$staged"
}

# Today's local mode, unchanged: venv, engine, ./config.toml, migrations, stack detached.
install_local() {
  WAPP_ROOT="$1"
  cd "$WAPP_ROOT"
  . scripts/lib/bootstrap.sh
  ensure_system_packages
  ensure_venv "."
  ensure_engine_built

  local wapp="$VENV/bin/wapp"
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
}

# Prints a directory holding the code: DIR as is; a tarball (path or URL) or a git URL
# fetched into a temporary directory. Default: this script's checkout, else the release.
fetch_source() {
  local source="$1" here="$2" tmp
  if [ -z "$source" ]; then
    if [ -n "$here" ] && [ -f "$here/scripts/lib/system.sh" ]; then echo "$here"; return; fi
    source="${WAPP_RELEASE_URL:?piped without --source: set WAPP_RELEASE_URL or pass --source}"
  fi
  if [ -d "$source" ]; then (cd "$source" && pwd); return; fi
  tmp=$(mktemp -d /tmp/wapp-source.XXXXXX)
  case "$source" in
    *.tar.gz|*.tgz|*.tar)
      if [ -f "$source" ]; then
        tar -xf "$source" -C "$tmp"
      else
        curl -fsSL "$source" | tar -xz -C "$tmp"
      fi ;;
    *) git clone --quiet --depth 1 "$source" "$tmp/src" >&2 ;;
  esac
  # A release tarball holds one top directory.
  local entries=("$tmp"/*)
  if [ ${#entries[@]} -eq 1 ] && [ -d "${entries[0]}" ]; then echo "${entries[0]}"; else echo "$tmp"; fi
}

main "$@"
