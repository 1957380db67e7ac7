# Sourced by install.sh: the system (VPS) mode. system_main ACTION SOURCE_DIR.
# Every path lives under $WAPP_SYS_ROOT (empty on a real install; a throwaway root in
# tests), and with a root set no systemctl runs: it prints what it would do.

SYS_USER=wapp
# Releases live side by side; /opt/wapp points at the current one, so an upgrade builds
# while the old code runs, and a rollback is one symlink back (a venv cannot be moved).
KEEP_RELEASES=2

sys_paths() {
  R="${WAPP_SYS_ROOT:-}"
  if [ -n "$R" ]; then R=$(mkdir -p "$R" && cd "$R" && pwd); fi
  OPT="$R/opt/wapp"
  RELEASES="$R/opt/wapp.d"
  ETC="$R/etc/wapp"
  CONFIG="$ETC/config.toml"
  DATA="$R/var/lib/wapp"
  BIN="$R/usr/local/bin/wapp"
  UNIT="$R/etc/systemd/system/wapp.service"
}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

systemctl_or_say() {
  if [ -n "$R" ]; then echo "(--root) would run: systemctl $*"; else systemctl "$@"; fi
}

check_os() {
  [ "${WAPP_SYS_FORCE_OS:-0}" = 1 ] && return 0
  local id="" version=""
  if [ -r /etc/os-release ]; then
    id=$(. /etc/os-release && echo "${ID:-}")
    version=$(. /etc/os-release && echo "${VERSION_ID:-}")
  fi
  case "$id $version" in
    "debian 12"|"debian 13"|"ubuntu 22.04"|"ubuntu 24.04") return 0 ;;
  esac
  die "unsupported system '${id:-unknown} ${version:-?}': wapp supports Debian 12/13 and Ubuntu 22.04/24.04 (--force-os to try anyway)"
}

# python3.11+ with venv, and the redis-server binary. Installing the package may start
# the distribution's own Redis service: it is left as it is (wapp runs its own Redis).
system_packages() {
  . "$1/scripts/lib/bootstrap.sh"
  if ! pick_python >/dev/null 2>&1; then apt_install python3.11 python3.11-venv; fi
  ensure_system_packages
}

ensure_user() {
  getent group "$SYS_USER" >/dev/null || groupadd --system "$SYS_USER"
  if ! getent passwd "$SYS_USER" >/dev/null; then
    say "creating the system user $SYS_USER"
    useradd --system --gid "$SYS_USER" --home-dir /var/lib/wapp --no-create-home \
      --shell /usr/sbin/nologin "$SYS_USER"
  fi
}

# A fingerprint of the code (not of what building adds), to tell "same code" on a rerun.
source_fingerprint() {
  (cd "$1" && find . -type f \
      ! -path './.git/*' ! -path './.venv/*' ! -path './engine/node_modules/*' \
      ! -path './engine/dist/*' ! -path '*/__pycache__/*' ! -path './.*cache/*' \
      ! -path './*.egg-info/*' ! -name '.wapp-*' ! -path './data/*' ! -name config.toml \
      -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

current_release() { [ -L "$OPT" ] && readlink -f "$OPT" || true; }

# Copy the code into a new release dir, build its venv and engine; print its path.
build_release() {
  local src="$1" fp="$2" dest prev
  dest="$RELEASES/$(date -u +%Y%m%d%H%M%S)-$fp"
  prev=$(current_release)
  mkdir -p -m 0755 "$RELEASES"
  rm -rf "$dest.tmp"
  mkdir -m 0755 "$dest.tmp"
  tar -C "$src" --exclude=./.git --exclude=./.venv --exclude=./engine/node_modules \
    --exclude=./engine/dist --exclude=__pycache__ --exclude='./.*cache' \
    --exclude='./*.egg-info' --exclude=./data --exclude=./config.toml -cf - . \
    | tar -C "$dest.tmp" -xf -
  mv "$dest.tmp" "$dest"
  # Same lock file as the running release: its node_modules, hard-linked, not downloaded.
  if [ -n "$prev" ] && [ -f "$prev/engine/node_modules/.wapp-lock" ] \
    && cmp -s "$prev/engine/package-lock.json" "$dest/engine/package-lock.json"; then
    cp -al "$prev/engine/node_modules" "$dest/engine/node_modules"
  fi
  (
    WAPP_ROOT="$dest"
    . "$dest/scripts/lib/bootstrap.sh"
    ensure_venv "." >&2
    ensure_engine_built >&2
  )
  echo "$fp" > "$dest/.wapp-source"
  chmod -R go-w "$dest"
  echo "$dest"
}

switch_to() {  # point /opt/wapp at a release, atomically
  ln -sfn "$1" "$OPT.new"
  mv -T "$OPT.new" "$OPT"
}

prune_releases() {
  local keep=() r
  keep+=("$(current_release)")
  for r in $(ls -1d "$RELEASES"/*/ 2>/dev/null | sort -r | head -n "$KEEP_RELEASES"); do
    keep+=("${r%/}")
  done
  for r in "$RELEASES"/*/; do
    r="${r%/}"
    [[ " ${keep[*]} " == *" $r "* ]] || rm -rf "$r"
  done
}

install_wrapper() {
  local text
  text=$(cat <<WRAPPER
#!/bin/sh
# wapp on the PATH (install.sh): the system install's CLI with its config, from any
# directory. Run by root, it becomes the service's user, so that no file in the data dir
# ever belongs to root.
WAPP_CONFIG="\${WAPP_CONFIG:-$CONFIG}"
export WAPP_CONFIG
if [ "\$(id -u)" -eq 0 ]; then
  cd / && HOME=$DATA exec setpriv --reuid=$SYS_USER --regid=$SYS_USER --init-groups -- $OPT/.venv/bin/wapp "\$@"
fi
exec $OPT/.venv/bin/wapp "\$@"
WRAPPER
)
  # Compared before writing: even a temporary file would change the directory's mtime.
  if [ -f "$BIN" ] && [ "$(cat "$BIN")" = "$text" ]; then return 0; fi
  mkdir -p -m 0755 "$(dirname "$BIN")"
  printf '%s\n' "$text" > "$BIN.tmp"
  chmod 0755 "$BIN.tmp"
  mv "$BIN.tmp" "$BIN"
}

install_unit() {
  local src="$1/systemd/wapp.service" text
  text=$(cat "$src")
  if [ -n "$R" ]; then
    text=$(printf '%s\n' "$text" | sed -e "s#/opt/wapp#$OPT#g" -e "s#/etc/wapp#$ETC#g" \
      -e "s#/var/lib/wapp#$DATA#g")
  fi
  mkdir -p -m 0755 "$(dirname "$UNIT")"
  if [ -f "$UNIT" ] && [ "$(cat "$UNIT")" = "$text" ]; then return 0; fi
  printf '%s\n' "$text" > "$UNIT.tmp"
  chmod 0644 "$UNIT.tmp"
  mv "$UNIT.tmp" "$UNIT"
  systemctl_or_say daemon-reload
}

configure() {
  local args=(--data-dir "$DATA" --port "${WAPP_SYS_PORT:-8080}" --owner "$SYS_USER")
  [ "${WAPP_SYS_SANDBOX:-0}" = 1 ] && args+=(--sandbox)
  mkdir -p -m 0750 "$ETC"
  chown "root:$SYS_USER" "$ETC"
  mkdir -p -m 0755 "$(dirname "$DATA")"
  # As root: it writes /etc/wapp and chowns the data dir and key to the service user.
  "$OPT/.venv/bin/wapp" --config "$CONFIG" init --system "${args[@]}"
}

as_service_user() { "$BIN" "$@"; }

service_running() {
  if [ -n "$R" ]; then as_service_user status >/dev/null 2>&1; else systemctl is-active --quiet wapp.service; fi
}

stop_service() {
  if [ -n "$R" ]; then
    # A stack started by hand (the unit's ExecStart): stopping supervisord ends it.
    as_service_user down >&2 || true
  else
    systemctl stop wapp.service
  fi
}

start_service() {
  systemctl_or_say enable --now wapp.service
}

report() {
  say "ready"
  as_service_user keys bootstrap-admin
  if ! as_service_user status; then
    [ -n "$R" ] && echo "(--root) the unit is not started: run its ExecStart by hand"
  fi
  return 0
}

do_install() {
  local src="$1" fp cur
  check_os
  system_packages "$src"
  ensure_user
  # A throwaway root must be reachable by the service user.
  [ -n "$R" ] && chmod 0755 "$R"
  fp=$(source_fingerprint "$src")
  cur=$(current_release)
  if [ -z "$cur" ]; then
    say "installing the code into $OPT"
    switch_to "$(build_release "$src" "$fp")"
  elif [ "$(cat "$cur/.wapp-source" 2>/dev/null)" != "$fp" ]; then
    die "$OPT holds other code ($(basename "$cur")): install.sh --upgrade installs this one"
  fi
  install_wrapper
  say "configuration"
  configure
  say "database migrations"
  as_service_user db upgrade
  install_unit "$OPT"
  if ! service_running; then start_service; fi
  report
}

do_upgrade() {
  local src="$1" fp cur new backup
  check_os
  cur=$(current_release)
  [ -n "$cur" ] || die "no wapp installed in $OPT: run install.sh without --upgrade"
  fp=$(source_fingerprint "$src")
  if [ "$(cat "$cur/.wapp-source" 2>/dev/null)" = "$fp" ]; then
    echo "already at this code ($(basename "$cur")); nothing to upgrade"
    return 0
  fi
  system_packages "$src"
  say "building the new release (the running one keeps serving)"
  new=$(build_release "$src" "$fp")
  say "stopping wapp"
  stop_service
  say "backing up the database and Redis"
  if ! backup=$(as_service_user service backup | awk '{print $1}') || [ ! -d "$backup" ]; then
    rm -rf "$new"
    start_service
    die "the backup failed: nothing was changed ($(basename "$cur") is still installed)"
  fi
  echo "backup: $backup"
  # The new code may add config fields the old code does not know: a rollback puts the
  # config back as it was, owner and mode included.
  cp -p "$CONFIG" "$backup/config.toml"
  switch_to "$new"
  install_wrapper
  configure
  say "database migrations"
  if ! as_service_user db upgrade; then
    echo "MIGRATION FAILED: rolling back to $(basename "$cur") and the data of $backup" >&2
    switch_to "$cur"
    cp -p "$backup/config.toml" "$CONFIG"
    as_service_user service restore "$backup" >&2 \
      || die "the restore failed too: the previous code is back, its data is in $backup (wapp service restore $backup)"
    install_unit "$cur"
    rm -rf "$new"
    start_service
    echo "rolled back: the previous code ($(basename "$cur")) runs again with the data and config from before the upgrade (backup: $backup)" >&2
    return 1
  fi
  install_unit "$OPT"
  say "starting wapp"
  if [ -n "$R" ]; then echo "(--root) would run: systemctl restart wapp.service"; else systemctl restart wapp.service; fi
  prune_releases
  echo "upgraded $(basename "$cur") -> $(basename "$new")"
  if [ -z "$R" ]; then as_service_user status || true; fi
}

do_uninstall() {
  say "stopping and removing the service"
  if [ -n "$R" ]; then
    [ -x "$BIN" ] && stop_service
    echo "(--root) would run: systemctl disable --now wapp.service"
  elif [ -f "$UNIT" ]; then
    systemctl disable --now wapp.service || true
  fi
  rm -f "$UNIT"
  systemctl_or_say daemon-reload
  say "removing the code"
  rm -rf "$OPT" "$RELEASES" "$BIN"
  if [ "${WAPP_SYS_PURGE:-0}" = 1 ]; then
    say "purging config and data"
    rm -rf "$ETC" "$DATA"
    # The user is the host's even with --root; only a real purge removes it.
    if [ -z "$R" ] && getent passwd "$SYS_USER" >/dev/null; then userdel "$SYS_USER" || true; fi
  else
    echo "kept $CONFIG and $DATA (install.sh --uninstall --purge removes them)"
  fi
}

system_main() {
  local action="$1" src="$2"
  # The venv is built from the distribution's Python, never a per-user one (pyenv in
  # /root would be unreadable to the service user).
  export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
  sys_paths
  case "$action" in
    install) do_install "$src" ;;
    upgrade) do_upgrade "$src" ;;
    uninstall) do_uninstall ;;
  esac
}
