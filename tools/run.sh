#!/usr/bin/env bash
# The README's two entry points, for a fresh Debian machine (run as root, from the repo root):
#   bash tools/run.sh demo   -> installs what it needs, runs the main demo
#   bash tools/run.sh test   -> installs what it needs, runs ruff, mypy and the whole test suite
# Idempotent: packages and the venv are installed only when missing or when pyproject changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv

# Debian packages: the lab's plumbing and the real clients the tests and the demo use.
# gcc, python3-dev and libssl-dev build the optional native data path (setup.py); chromium
# renders the status page and the overlay map in tests/lab/test_web_lab.py (headless);
# dnsmasq-base (the binary, no service) is the split-DNS resolver of tests/lab/test_splitdns_lab.py;
# debootstrap makes the throwaway Debian root the .deb is tried in (tests/pkg/test_deb.py);
# tcpdump watches an overlay-only node's wire in tests/lab/test_two_networks_lab.py.
APT_PACKAGES=(python3 python3-venv openssl iproute2 iptables nftables iputils-ping dnsutils
  udhcpc isc-dhcp-client iperf3 procps coturn stun-server gcc python3-dev libssl-dev chromium
  curl dnsmasq-base debootstrap tcpdump)
# Only for `run.sh bench`: the peers ipop is measured against.
BENCH_PACKAGES=(tinc wireguard-go wireguard-tools nebula)

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "tools/run.sh: run as root (it installs packages and the lab needs network namespaces)" >&2
    exit 2
  fi
}

install_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

pick_python() {
  for py in python3.11 python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      echo "$py"; return
    fi
  done
  echo "tools/run.sh: Python >= 3.11 is required" >&2
  exit 2
}

install_venv() {
  local stamp=$VENV/.pyproject.sha256 want
  # The native module is built by the install too: a change to it reinstalls.
  want=$(cat pyproject.toml setup.py ipop/link/_fastpath.c | sha256sum | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  echo "== creating the venv from pyproject.toml"
  "$(pick_python)" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  echo "$want" >"$stamp"
}

run_tests() {
  export PATH=$VENV/bin:$PATH
  echo "== ruff"
  ruff check .
  ruff format --check .
  echo "== mypy"
  mypy
  # The native data path is optional for users, not here: a compile that failed would turn
  # its differential tests into skips without a word.
  echo "== native data path (built, then fuzzed against its twin under ASan + UBSan)"
  python -c 'from ipop.link import fastpath as f; assert f.BACKEND == "native", "not built"'
  python -m ipop.tools.bench.fastpath_fuzz --asan --runs 20000
  echo "== pytest"
  pytest -q -p no:cacheprovider "$@"
  if [ $# -eq 0 ]; then
    # Both data paths pass every lab test: the lab again, with the native module's twin.
    echo "== pytest tests/lab with IPOP_FASTPATH=python"
    IPOP_FASTPATH=python pytest -q -p no:cacheprovider tests/lab
  fi
}

cmd=${1:-}
shift || true
case "$cmd" in
  demo)
    need_root; install_apt; install_venv
    exec "$VENV/bin/ipop-lab" demo "$@"
    ;;
  bench)
    need_root; install_apt "${BENCH_PACKAGES[@]}"; install_venv
    exec "$VENV/bin/ipop-lab" bench "$@"
    ;;
  test)
    need_root; install_apt; install_venv
    run_tests "$@"
    ;;
  *)
    echo "usage: bash tools/run.sh demo|test|bench" >&2
    exit 2
    ;;
esac
