#!/usr/bin/env bash
# Install, run and purge the ipop .deb in a throwaway Debian root, never on this machine.
#
#   bash deploy/debian/trial.sh DEB [--base DIR] [--keep]
#
# A minimal bookworm root (debootstrap --variant=minbase, plus what the package depends on and
# systemd for its tools) is made in /tmp/ipopdeb-PID; with --base DIR it is made once in DIR
# and copied for each run (delete DIR to make it again). Every step then runs chrooted into it inside a network namespace
# of our own (prefix ipopdeb-: the node's, u0 198.51.100.10/24, and a bootstrap node's, u1
# 198.51.100.11/24, a veth pair between them), so no tap or socket reaches the host's
# interfaces:
#   1. dpkg -i: the ipop user and group, /etc/ipop root:ipop 0750, nothing enabled, every
#      shared library found, every command answers --help, systemd-analyze verify the units;
#   2. ipop-config makes a network, a bundle dropped in /etc/ipop/node.bundle.toml, and a
#      bootstrap node (the packaged ipopd too, as root, its files in /root/boot): a lone node
#      cannot win a virtual IP, which takes a quorum;
#   3. ipopd started as the unit's [Service] says (ExecStart, User, Group, capabilities,
#      runtime and state directories; systemd does not run in a chroot): its control socket
#      answers `ipop status --json` with a virtual IP, ipop0 carries it, `ipop ping boot.ipop`
#      is answered; SIGTERM stops it, exit 0;
#   4. dpkg -r (after `systemctl enable ipopd`): disabled, the program gone, /etc/ipop and the
#      user kept;
#   5. dpkg --purge: no file of the package or of ipopd left, no user, no group: the file list
#      of the root equals the one before the install;
#   6. with a bundle already in /etc/ipop, dpkg -i enables ipopd.service (offline, as systemctl
#      does in a chroot), and a purge again leaves the root as it was.
# The root's /proc mount, the namespaces, both ipopd and the root itself go in every case (trap),
# and those of earlier runs that were killed before their trap ran go at the next start.
# Needs root, debootstrap and the Debian mirror that apt uses here ($IPOP_DEB_MIRROR overrides).
# Prints a transcript; the last line is "deb trial: OK" or the check that failed.
set -euo pipefail

usage() { echo "usage: trial.sh DEB [--base DIR] [--keep]" >&2; exit 2; }
[ $# -ge 1 ] || usage
DEB=$(realpath "$1"); shift
BASE= KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --base) BASE=$(realpath -m "$2"); shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) usage ;;
  esac
done
[ -f "$DEB" ] || { echo "trial.sh: no such file: $DEB" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "trial.sh: run as root (chroot, network namespaces)" >&2; exit 2; }
command -v debootstrap >/dev/null || {
  echo "trial.sh: debootstrap is missing: apt-get install debootstrap" >&2; exit 2; }

SUITE=bookworm
# What the package depends on, and systemd for systemctl and systemd-analyze in the root.
INCLUDE=python3.11,libssl3,systemd
mirror() {
  if [ -n "${IPOP_DEB_MIRROR:-}" ]; then echo "$IPOP_DEB_MIRROR"; return; fi
  # The first Debian archive apt uses here (deb822 or one-line sources), else deb.debian.org.
  local uri
  uri=$(sed -n 's/^URIs: *\([^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null |
    head -1)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ {print $2; exit}' \
    /etc/apt/sources.list 2>/dev/null || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

# One name per run: the namespaces and the work folder (the throwaway root in it).
NS=ipopdeb-$$
NSB=$NS-boot
WORK=/tmp/$NS
ROOT=$WORK/root
PID= BOOT_PID=
CHECKS=0

# The processes chrooted in the root, its /proc, the namespaces and the work folder of run $1
# (ipopdeb-PID).
teardown() {
  local proc
  for proc in /proc/[0-9]*; do
    [ "$(readlink "$proc/root" 2>/dev/null)" != "/tmp/$1/root" ] || kill -KILL "${proc#/proc/}" 2>/dev/null || true
  done
  if mountpoint -q "/tmp/$1/root/proc" 2>/dev/null; then
    umount "/tmp/$1/root/proc" || umount -l "/tmp/$1/root/proc"
  fi
  ip netns del "$1" 2>/dev/null || true
  ip netns del "$1-boot" 2>/dev/null || true
  if [ "${2:-}" = keep ]; then echo "kept: /tmp/$1/root"; else rm -rf --one-file-system "/tmp/$1"; fi
}
cleanup() {
  local rc=$?
  teardown "$NS" "$([ "$KEEP" = 1 ] && echo keep)"
  exit "$rc"
}
# Runs killed before their trap ran: their processes are gone, their namespaces are not.
for stale in $( (ip netns list; ls /tmp) 2>/dev/null | grep -o '^ipopdeb-[0-9]*' | sort -u); do
  kill -0 "${stale#ipopdeb-}" 2>/dev/null || teardown "$stale"
done
mkdir "$WORK"
trap cleanup EXIT
trap 'exit 130' INT TERM
set -E
trap 'echo "deb trial: FAILED: line $LINENO: $BASH_COMMAND"' ERR

fail() { echo "deb trial: FAILED: $*"; exit 1; }
ok() { CHECKS=$((CHECKS + 1)); echo "   ok: $*"; }
# A command in the root, in the namespace, with a clean environment; echoed as typed there.
in_root() {
  ip netns exec "$NS" chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 "$@"
}
show() { echo "# $*"; in_root sh -c "$*" 2>&1; }
# Wait for a command in the root to succeed, polling every 0.2 s up to $1 seconds.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until in_root sh -c "$*" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

echo "== a throwaway $SUITE root ($INCLUDE)"
start=$SECONDS
if [ -n "$BASE" ]; then
  if [ ! -d "$BASE" ]; then
    rm -rf --one-file-system "$BASE.part"
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$BASE.part" "$(mirror)" \
      >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap (log above)"; }
    mv "$BASE.part" "$BASE"
  fi
  cp -a "$BASE" "$ROOT"
else
  debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOT" "$(mirror)" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap (log above)"; }
fi
echo "   $((SECONDS - start)) s, $(du -sh --one-file-system "$ROOT" | cut -f1)"

mount -t proc proc "$ROOT/proc"
mkdir -p "$ROOT/dev/net"
[ -c "$ROOT/dev/net/tun" ] || mknod -m 0666 "$ROOT/dev/net/tun" c 10 200
ip netns add "$NS"
ip netns add "$NSB"
ip -n "$NS" link add u0 type veth peer name u1 netns "$NSB"
ip -n "$NS" addr add 198.51.100.10/24 dev u0
ip -n "$NSB" addr add 198.51.100.11/24 dev u1
for ns in "$NS" "$NSB"; do ip -n "$ns" link set lo up; done
ip -n "$NS" link set u0 up
ip -n "$NSB" link set u1 up
cp "$DEB" "$ROOT/tmp/"
DEB_IN=/tmp/$(basename "$DEB")
# The root's files before the package: compared with those after the purge.
list_files() {
  in_root find / -xdev \( -path /proc -o -path /tmp -o -path /var/log -o -path /var/cache \
    -o -path /var/lib/dpkg -o -path /run/systemd \) -prune -o -print |
    grep -v -E '^/etc/(passwd|group|shadow|gshadow)-$' | LC_ALL=C sort
}
list_files >"$WORK/before.txt"

echo "== 1. install"
show dpkg -i "$DEB_IN"
show "id ipop; stat -c '%n %U:%G %a' /etc/ipop /etc/ipop/node.toml"
[ "$(in_root stat -c '%U:%G %a' /etc/ipop)" = "root:ipop 750" ] || fail "/etc/ipop is not root:ipop 0750"
[ "$(in_root stat -c '%U:%G %a' /etc/ipop/node.toml)" = "root:ipop 640" ] || fail "node.toml is not root:ipop 0640"
ok "user and group ipop, /etc/ipop root:ipop 0750, node.toml 0640"
enabled=$(in_root sh -c 'ls /etc/systemd/system/*.wants/ | grep ipop' || true)
[ -z "$enabled" ] || fail "enabled without a bundle: $enabled"
ok "nothing enabled without a bundle"
missing=$(in_root sh -c 'find /usr/lib/ipop -name "*.so" -exec ldd {} + | grep "not found"' || true)
[ -z "$missing" ] || fail "shared libraries not found: $missing"
ok "every shared library of /usr/lib/ipop found"
for cmd in ipopd ipop ipop-config ipop-router ipop-lab ipop-sim; do
  in_root "$cmd" --help | head -1 | grep -q '^usage:' || fail "$cmd --help"
done
ok "ipopd, ipop, ipop-config, ipop-router, ipop-lab, ipop-sim --help"
show "systemd-analyze verify ipopd.service ipop-router.service && echo verified" | tee "$WORK/verify.txt"
[ "$(tail -1 "$WORK/verify.txt")" = verified ] && [ "$(wc -l <"$WORK/verify.txt")" = 2 ] ||
  fail "systemd-analyze verify"
ok "systemd-analyze verify: no warning"

echo "== 2. a network: a bundle in /etc/ipop, and a bootstrap node"
show ipop-config --home /root/ca init debnet --subnet 100.64.0.0/10 --bootstrap 198.51.100.11:5800
show ipop-config --home /root/ca node debnet deb1 --hostname deb1 --out /etc/ipop/node.bundle.toml
show "chgrp ipop /etc/ipop/node.bundle.toml && chmod 0640 /etc/ipop/node.bundle.toml"
cp "$ROOT/etc/ipop/node.bundle.toml" "$WORK/"  # for step 6, outside the root
mkdir -p "$ROOT/root/boot"
show ipop-config --home /root/ca node debnet boot --hostname boot --out /root/boot/boot.bundle.toml
cat >"$ROOT/root/boot/node.toml" <<'TOML'
bundle = "boot.bundle.toml"
state_dir = "state"
[control]
socket = "/root/boot/ipopd.sock"
TOML
echo "# ipopd --config /root/boot/node.toml &    (as root, in the bootstrap's namespace)"
ip netns exec "$NSB" chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 /usr/bin/ipopd --config /root/boot/node.toml >"$WORK/boot.log" 2>&1 &
BOOT_PID=$!

echo "== 3. ipopd, as ipopd.service runs it"
UNIT=$ROOT/lib/systemd/system/ipopd.service
key() { sed -n "s/^$1=//p" "$UNIT"; }
EXEC=$(key ExecStart) USER_=$(key User) GROUP_=$(key Group)
CAPS=$(key AmbientCapabilities | tr 'A-Z' 'a-z' | sed 's/cap_//g; s/ /,+/g; s/^/+/')
BOUND=$(key CapabilityBoundingSet | tr 'A-Z' 'a-z' | sed 's/cap_//g; s/ /,+/g; s/^/-all,+/')
echo "   ExecStart=$EXEC User=$USER_ Group=$GROUP_ capabilities $CAPS"
# RuntimeDirectory= and StateDirectory= with their modes, owned by User= as systemd makes them.
show "install -d -m $(key RuntimeDirectoryMode) -o $USER_ -g $GROUP_ /run/$(key RuntimeDirectory)" \
  "&& install -d -m $(key StateDirectoryMode) -o $USER_ -g $GROUP_ /var/lib/$(key StateDirectory)"
echo "# setpriv --reuid=$USER_ --regid=$GROUP_ --init-groups --inh-caps=$CAPS --ambient-caps=$CAPS --bounding-set=$BOUND --no-new-privs $EXEC &"
# Not through in_root: ip, chroot, env and setpriv each exec the next, so $! is ipopd's pid.
# shellcheck disable=SC2086  # ExecStart is a command line
ip netns exec "$NS" chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 setpriv --reuid="$USER_" --regid="$GROUP_" --init-groups --inh-caps="$CAPS" \
  --ambient-caps="$CAPS" --bounding-set="$BOUND" --no-new-privs $EXEC >"$WORK/ipopd.log" 2>&1 &
PID=$!
wait_for 30 'ipop status --json' || { cat "$WORK/ipopd.log"; fail "no answer on the control socket in 30 s"; }
ok "the control socket answers (pid $PID)"
wait_for 30 "ipop status --json | python3.11 -c 'import json, sys; assert json.load(sys.stdin)[\"self\"][\"vip\"]'" ||
  { cat "$WORK/ipopd.log"; fail "no virtual IP in 30 s"; }
in_root ipop status --json >"$WORK/status.json"
summary=$(python3 -c 'import json, sys; s = json.load(open(sys.argv[1]))["self"]
print(s["node_name"], s["vip"], " ".join(s["names"]))' "$WORK/status.json")
echo "# ipop status --json    (self: node_name vip names)"
echo "$summary"
read -r name vip _ <<<"$summary"
[ "$name" = deb1 ] || fail "status names $name, not deb1"
ok "ipop status --json: deb1 holds $vip"
echo "# ip -br addr show ipop0    (in the namespace)"
ip -n "$NS" -br addr show ipop0
ip -n "$NS" -br addr show ipop0 | grep -q " $vip/" || fail "ipop0 does not carry $vip"
ok "ipop0 carries $vip"
wait_for 30 "ipop ping boot.ipop -c 1 -W 1" || fail "boot.ipop does not answer ipop ping in 30 s"
show ipop ping boot.ipop -c 2 | tee "$WORK/ping.txt"
grep -q "2 answered" "$WORK/ping.txt" || fail "boot.ipop does not answer ipop ping"
ok "ipop ping boot.ipop: answered over the tunnel"
uid=$(awk '/^Uid:/ {print $3}' "/proc/$PID/status")
caps=$(awk '/^CapEff:/ {print $2}' "/proc/$PID/status")
echo "   pid $PID: $(cat "/proc/$PID/comm"), uid $uid, CapEff $caps"
[ "$uid" = "$(in_root id -u ipop)" ] || fail "ipopd runs as uid $uid, not ipop"
# Bits 12 and 10: CAP_NET_ADMIN and CAP_NET_BIND_SERVICE, nothing else.
[ "$caps" = 0000000000001400 ] || fail "ipopd's effective capabilities are $caps"
ok "ipopd runs as ipop with CAP_NET_ADMIN + CAP_NET_BIND_SERVICE only"
echo "# kill -TERM $PID"
kill -TERM "$PID"
rc=0; wait "$PID" || rc=$?
PID=
[ "$rc" = 0 ] || { cat "$WORK/ipopd.log"; fail "ipopd exited $rc on SIGTERM"; }
ok "ipopd stopped on SIGTERM, exit 0"
kill -TERM "$BOOT_PID"
wait "$BOOT_PID" || true
BOOT_PID=

echo "== 4. remove: the program goes, the configuration and the user stay"
show rm -rf /root/ca /root/boot
# The admin's step once the bundle is in place; in a chroot systemctl only makes the link.
show systemctl enable ipopd.service
[ -L "$ROOT/etc/systemd/system/multi-user.target.wants/ipopd.service" ] || fail "systemctl enable"
show dpkg -r ipop
show "ls /etc/ipop; id ipop"
[ ! -e "$ROOT/etc/systemd/system/multi-user.target.wants/ipopd.service" ] ||
  fail "ipopd.service still enabled after dpkg -r"
[ ! -e "$ROOT/usr/lib/ipop" ] && [ ! -e "$ROOT/usr/bin/ipopd" ] || fail "the program is left after dpkg -r"
[ -f "$ROOT/etc/ipop/node.toml" ] && [ -f "$ROOT/etc/ipop/node.bundle.toml" ] ||
  fail "dpkg -r removed the configuration"
in_root getent passwd ipop >/dev/null || fail "dpkg -r removed the user"
ok "dpkg -r: disabled, program gone, /etc/ipop and the user kept"

# Purge, then check that nothing of the package, of ipopd or of the user is left.
purge_and_compare() {
  show dpkg --purge ipop
  show "ls -d /etc/ipop /usr/lib/ipop /var/lib/ipop /run/ipop /usr/bin/ipopd; getent passwd ipop; getent group ipop" || true
  for p in /etc/ipop /usr/lib/ipop /var/lib/ipop /run/ipop /usr/bin/ipopd /lib/systemd/system/ipopd.service; do
    [ ! -e "$ROOT$p" ] || fail "$p is left"
  done
  ! in_root getent passwd ipop >/dev/null || fail "user ipop is left"
  ! in_root getent group ipop >/dev/null || fail "group ipop is left"
  list_files >"$WORK/after.txt"
  if ! diff "$WORK/before.txt" "$WORK/after.txt" >"$WORK/diff.txt"; then
    cat "$WORK/diff.txt"; fail "the root's files differ from before the install (diff above)"
  fi
  ok "no file, user or group left: the root's $(wc -l <"$WORK/after.txt") paths are those before the install"
}

echo "== 5. purge"
purge_and_compare

echo "== 6. a bundle in place before the first install: ipopd.service enabled, then purged"
install -d "$ROOT/etc/ipop"
cp "$WORK/node.bundle.toml" "$ROOT/etc/ipop/"
show dpkg -i "$DEB_IN"
[ -L "$ROOT/etc/systemd/system/multi-user.target.wants/ipopd.service" ] ||
  fail "a bundle was in place, and ipopd.service was not enabled"
[ ! -e "$ROOT/etc/systemd/system/multi-user.target.wants/ipop-router.service" ] ||
  fail "ipop-router.service was enabled"
ok "with a bundle in place, the first install enables ipopd.service (only)"
purge_and_compare
echo "deb trial: OK ($CHECKS checks)"
