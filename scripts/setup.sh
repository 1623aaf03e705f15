#!/usr/bin/env bash
# Installs everything teep-coap needs on a fresh Debian machine: the Debian packages (build tools
# for DTLSSocket/tinydtls, libcoap's command-line peers, PostgreSQL), a virtualenv with the package
# and its dev tools, and node-coap for the interop tests. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(autoconf automake libtool pkg-config make gcc python3-dev python3-venv curl libcoap3-bin nodejs npm postgresql tshark)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# node may come from elsewhere than Debian (nodesource, nvm): then npm comes with it.
if command -v node >/dev/null && command -v npm >/dev/null; then
    missing=("${missing[@]/nodejs/}"); missing=("${missing[@]/npm/}")
fi
pkgs=()
for p in "${missing[@]}"; do [ -n "$p" ] && pkgs+=("$p"); done
if [ ${#pkgs[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${pkgs[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    # tshark asks whether non-root users may capture; answer no so the install never stops to ask
    echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev,postgres]'

if command -v npm >/dev/null; then
    (cd interop/node && npm install --silent --no-audit --no-fund >/dev/null)
fi
touch .setup-done
echo "setup: done"
