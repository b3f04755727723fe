#!/usr/bin/env bash
# Build the Debian package of ipop: dist/ipop_<version>-1_<arch>.deb.
#
#   bash deploy/debian/build.sh [--wheel FILE] [--out DIR]
#
# Layout of the package (why: deploy/debian/README.md):
#   /usr/lib/ipop/               a private venv on Debian's /usr/bin/python3.11, holding the ipop
#                                wheel and its pinned dependencies; no pip inside
#   /usr/bin/<command>           links to /usr/lib/ipop/bin/<command>, the six console scripts
#   /lib/systemd/system/         ipopd.service and ipop-router.service from deploy/, run from /usr/bin
#   /etc/ipop/node.toml          deploy/ipop.example.toml, a conffile (bundle = node.bundle.toml)
#   /usr/share/polkit-1/rules.d/ deploy/50-ipop-resolved.rules (split DNS as the user ipop)
#   /usr/share/doc/ipop/         README.md, copyright, examples/router.toml
#
# The wheel is `python -m build`'s unless --wheel names one. Its dependencies come from pip's
# configured index. Needs: Debian's python3.11 (/usr/bin/python3.11), dpkg-deb, and the
# project's dev venv (or $PYTHON) with `build` for the wheel.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
HERE=$ROOT/deploy/debian
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
TARGET_PY=/usr/bin/python3.11   # the interpreter the venv is built on, and runs on
OUT=$ROOT/dist
APP=/usr/lib/ipop   # the venv, as installed
WHEEL=

while [ $# -gt 0 ]; do
  case "$1" in
    --wheel) WHEEL=$(realpath "$2"); shift 2 ;;
    --out) OUT=$(realpath -m "$2"); shift 2 ;;
    *) echo "build.sh: unknown argument $1 (use --wheel FILE, --out DIR)" >&2; exit 2 ;;
  esac
done

die() { echo "build.sh: $*" >&2; exit 2; }
[ -x "$TARGET_PY" ] || die "$TARGET_PY is missing: apt-get install python3.11"
command -v dpkg-deb >/dev/null || die "dpkg-deb is missing: apt-get install dpkg"

VERSION=$("$TARGET_PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
ARCH=$(dpkg --print-architecture)
DEB_VERSION=$VERSION-1
mkdir -p "$OUT"

STAGE=$(mktemp -d /tmp/ipop-deb.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT

if [ -z "$WHEEL" ]; then
  echo "== python -m build (sdist, then the wheel from it)"
  # From a copy: setuptools writes egg-info next to the sources and reads what is left there.
  mkdir "$STAGE/src"
  tar -C "$ROOT" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude='.*_cache' --exclude=.hypothesis \
    --exclude=./lab-runs -cf - . | tar -C "$STAGE/src" -xf -
  "$PYTHON" -m build --outdir "$OUT" "$STAGE/src" >"$OUT/build.log" 2>&1 || {
    tail -20 "$OUT/build.log" >&2; die "python -m build failed (log: $OUT/build.log)"; }
  WHEEL=$(ls -t "$OUT"/ipop-"$VERSION"-*.whl | head -1)
fi
echo "== wheel: $(basename "$WHEEL")"

PKG=$STAGE/pkg
mkdir -p "$PKG"

echo "== the venv: $APP on $TARGET_PY"
VENV=$PKG$APP
"$TARGET_PY" -m venv --without-pip "$VENV"
# pip runs on the venv's interpreter (--python), so it resolves for Debian's Python; nothing
# byte-compiled yet: the .pyc files must name $APP, not the staging path.
"$PYTHON" -m pip --python "$VENV/bin/python" install --no-compile "$WHEEL" >"$OUT/pip.log" 2>&1 || {
  grep -v "is ignored" "$OUT/pip.log" | tail -20 >&2; die "pip install failed (log: $OUT/pip.log)"; }
rm -f "$VENV"/bin/activate* "$VENV"/bin/Activate.ps1 "$VENV"/lib/python3.*/site-packages/ipop-*.dist-info/direct_url.json
# Scripts and pyvenv.cfg name the staging path: make them name $APP.
grep -rlF "$PKG" "$VENV/bin" "$VENV/pyvenv.cfg" | xargs -r sed -i "s#$PKG##g"
"$TARGET_PY" -m compileall -q -j0 --invalidation-mode unchecked-hash -s "$PKG" -p / \
  "$VENV/lib" >/dev/null
# The daemons' tables of compiled dataclass methods and regular expressions
# (ipop.tools.classcache, ipop.tools.recache), written here so that they are the package's
# files: a daemon that found one incomplete would write its own into the venv, which dpkg -r
# would then leave behind.
# -I: the venv's ipop, not the source tree's (the working directory comes first on sys.path).
"$VENV/bin/python" -I -c 'import sys; from ipop.tools import classcache
sys.exit(0 if classcache.write_for_daemons() else 1)' || die "the dataclass and regex tables were not written"
if left=$(grep -rlF "$PKG" "$VENV"); then
  die "the staging path is still named in: $left"
fi
"$VENV/bin/python" -I -c 'import ipop.tools.ipopd' || die "the venv does not import ipop"

echo "== commands, units, configuration, documents"
mkdir -p "$PKG/usr/bin"
for script in $("$TARGET_PY" -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["scripts"])'); do
  ln -s "$APP/bin/$script" "$PKG/usr/bin/$script"
done
install -d "$PKG/lib/systemd/system"
for unit in ipopd.service ipop-router.service; do
  # The units of deploy/ name /usr/local (a pip install); packaged, the commands are in /usr.
  { echo "# Installed by the ipop Debian package (deploy/debian/build.sh) from deploy/$unit."
    sed 's#/usr/local/#/usr/#g' "deploy/$unit"; } >"$PKG/lib/systemd/system/$unit"
  ! grep -q /usr/local "$PKG/lib/systemd/system/$unit" || die "$unit still names /usr/local"
done
install -D -m 0644 deploy/ipop.example.toml "$PKG/etc/ipop/node.toml"
install -D -m 0644 README.md "$PKG/usr/share/doc/ipop/README.md"
install -D -m 0644 deploy/router.example.toml "$PKG/usr/share/doc/ipop/examples/router.toml"
# Lets the user ipop register split DNS with systemd-resolved (README, "Split DNS").
install -D -m 0644 deploy/50-ipop-resolved.rules "$PKG/usr/share/polkit-1/rules.d/50-ipop-resolved.rules"
{ echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: ipop"
  echo
  echo "Files: *"
  echo "License: MIT"
  sed 's/^$/./; s/^/ /' LICENSE; } >"$PKG/usr/share/doc/ipop/copyright"

echo "== DEBIAN/"
install -d "$PKG/DEBIAN"
install -m 0755 "$HERE/postinst" "$HERE/prerm" "$HERE/postrm" "$PKG/DEBIAN/"
echo /etc/ipop/node.toml >"$PKG/DEBIAN/conffiles"
# libssl3: libcrypto.so.3 of the native data path (cryptography's wheel carries its own).
DEPENDS="$(basename "$TARGET_PY"), libc6, libssl3, passwd"
SIZE=$(du -sk --exclude=DEBIAN "$PKG" | cut -f1)
sed -e "s/@VERSION@/$DEB_VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$SIZE/" \
  -e "s/@DEPENDS@/$DEPENDS/" "$HERE/control" >"$PKG/DEBIAN/control"
(cd "$PKG" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
  xargs -0 md5sum) >"$PKG/DEBIAN/md5sums"

DEB=$OUT/ipop_${DEB_VERSION}_$ARCH.deb
# gzip: xz takes ten times as long here for 9.6 MB instead of 15.
dpkg-deb --root-owner-group -Zgzip --build "$PKG" "$DEB" >/dev/null
echo "== $DEB ($(du -h "$DEB" | cut -f1), installed $((SIZE / 1024)) MB)"
