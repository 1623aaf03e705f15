#!/usr/bin/env bash
# Installs what teep-coap needs on a fresh Debian machine. Safe to run again.
#
#   bash scripts/setup.sh demo   only what `teep-coap demo` needs: a C compiler and the autotools that
#                                build DTLSSocket/tinydtls, python3-dev/venv, and .venv with the package
#   bash scripts/setup.sh        (= `full`) the above plus the test peers and tools: libcoap's command-line
#                                client/server, node + node-coap, PostgreSQL, curl, tshark, valgrind and the dev extras
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-full}
DEMO_PACKAGES=(autoconf automake libtool pkg-config make gcc python3-dev python3-venv)
TEST_PACKAGES=(curl libcoap3-bin nodejs npm postgresql tshark valgrind)
case "$MODE" in
    demo) APT_PACKAGES=("${DEMO_PACKAGES[@]}"); EXTRAS="" ;;
    full) APT_PACKAGES=("${DEMO_PACKAGES[@]}" "${TEST_PACKAGES[@]}"); EXTRAS="[dev,postgres]" ;;
    *) echo "setup: unknown mode '$MODE' (use 'demo' or 'full')" >&2; exit 2 ;;
esac

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
    echo "setup ($MODE): installing Debian packages: ${pkgs[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    # tshark asks whether non-root users may capture; answer no so the install never stops to ask
    echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup ($MODE): creating .venv"
    "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e ".$EXTRAS"

if [ "$MODE" = full ]; then
    (cd interop/node && npm install --silent --no-audit --no-fund >/dev/null)
    touch .setup-done
fi
touch .setup-demo-done
echo "setup ($MODE): done"
