# Sourced by install.sh and scripts/test: installs whatever is missing, idempotently.
# Needs: Debian/Ubuntu with python3 >= 3.11 (Debian 12, Ubuntu 24.04); installs the rest.

WAPP_ROOT=${WAPP_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
VENV="$WAPP_ROOT/.venv"
. "$WAPP_ROOT/scripts/lib/node-shims.sh"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root (or sudo) to run: $*" >&2; return 1; fi
}

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "apt-get install ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

pick_python() {
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      echo "$py"; return 0
    fi
  done
  echo "python3 >= 3.11 is required" >&2; return 1
}

ensure_system_packages() {
  command -v redis-server >/dev/null || apt_install redis-server
  if ! "$(pick_python)" -c 'import venv, ensurepip' 2>/dev/null; then apt_install python3-venv; fi
}

# $1: pip extras spec, e.g. "." or ".[dev]"
ensure_venv() {
  local spec="$1" stamp="$VENV/.wapp-installed"
  local want
  want="$spec $(sha256sum "$WAPP_ROOT/pyproject.toml" | cut -d' ' -f1)"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$(pick_python)" -m venv "$VENV"
  fi
  if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
    say "pip install -e '$spec'"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    (cd "$WAPP_ROOT" && "$VENV/bin/python" -m pip install -q -e "$spec")
    echo "$want" >> "$stamp"
  fi
  wapp_node_shims "$VENV"
}

ensure_engine_built() {
  local engine="$WAPP_ROOT/engine" stamp="$WAPP_ROOT/engine/node_modules/.wapp-lock"
  local want
  want=$(sha256sum "$engine/package-lock.json" | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "npm ci (engine)"
    (cd "$engine" && PATH="$VENV/bin:$PATH" npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" > "$stamp"
  fi
  say "building the engine"
  (cd "$engine" && PATH="$VENV/bin:$PATH" npm run --silent build)
}
