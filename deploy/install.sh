#!/usr/bin/env bash
# Installs fabric as a systemd service on Debian/Ubuntu: run from a checkout, as root.
#   sudo deploy/install.sh            # install or upgrade, then (re)start the service
# Layout: code in /opt/fabric, config in /etc/fabric/fabric.toml (kept on upgrade), data in
# /var/lib/fabric, owned by the system user "fabric".
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (sudo)" >&2; exit 1; }

command -v nats-server >/dev/null || { apt-get update -qq && apt-get install -y -qq nats-server; }
command -v node >/dev/null || { echo "install.sh: Node.js 20 or newer is required" >&2; exit 1; }

id fabric >/dev/null 2>&1 || useradd --system --home-dir /var/lib/fabric --shell /usr/sbin/nologin fabric
install -d -o fabric -g fabric -m 0750 /var/lib/fabric
install -d -m 0755 /etc/fabric /opt/fabric
# The config may hold credentials (a hub's leafnode password, hub URLs): readable by the node only.
[ -f /etc/fabric/fabric.toml ] || install -m 0640 -o root -g fabric "$src/deploy/fabric.toml" /etc/fabric/fabric.toml

# Build in the checkout, then copy what runs: dist/, production node_modules, package files, docs.
(cd "$src" && npm ci --no-audit --no-fund && npm run build)
rm -rf /opt/fabric/dist /opt/fabric/docs
cp -a "$src/dist" "$src/docs" "$src/package.json" "$src/package-lock.json" /opt/fabric/
(cd /opt/fabric && npm ci --omit=dev --ignore-scripts --no-audit --no-fund)

install -m 0644 "$src/deploy/fabric.service" /etc/systemd/system/fabric.service
systemctl daemon-reload
systemctl enable fabric.service
systemctl restart fabric.service
echo "fabric installed: systemctl status fabric; /usr/bin/node /opt/fabric/dist/cli/main.js status"
