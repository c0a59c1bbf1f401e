#!/usr/bin/env bash
# Build dist/mailtee_<version>_<arch>.deb: a virtualenv at /opt/mailtee (Debian's own
# /usr/bin/python3), /usr/bin/proxy-admin, the systemd unit, a default
# /etc/mailtee/config.toml conffile and the maintainer scripts in packaging/debian/.
# Needs: python3-venv, dpkg-dev tools (dpkg-deb), network access to PyPI (or a pip mirror).
# No root needed; nothing outside a temporary directory and dist/ is written.
# See packaging/README.md for how the venv is made relocatable and for lintian.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
PYTHON=${DEB_PYTHON:-/usr/bin/python3}       # must be the interpreter the target box has
MAINTAINER=${DEB_MAINTAINER:-"mailtee maintainers <mailtee@example.org>"}
PREFIX=/opt/mailtee
OUT=${DEB_OUTDIR:-$top/dist}

die() { echo "build-deb: $*" >&2; exit 1; }
[ -x "$PYTHON" ] || die "$PYTHON not found (apt-get install python3)"
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || die "$PYTHON has no venv/ensurepip (apt-get install python3-venv)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || die "$PYTHON is not Python 3.11 (the Depends: below assume Debian 12's python3)"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"

version=$("$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$top/pyproject.toml")
arch=$(dpkg --print-architecture)
pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
pynext=$("$PYTHON" -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')

work=$(mktemp -d "${TMPDIR:-/tmp}/mailtee-deb.XXXXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root                 # the package's file system tree
venv=$root$PREFIX               # built here, then its paths are rewritten to $PREFIX
src=$work/src                   # a copy of the sources: pip builds never touch the checkout

echo "build-deb: mailtee $version ($arch) with $PYTHON ($pyver) in $work"

# 1. Sources: only what the wheel is built from (no build/ or *.egg-info in the checkout).
mkdir -p "$src"
(cd "$top" && cp -a pyproject.toml README.md proxy archive admin accounts web "$src/")
find "$src" -name __pycache__ -prune -exec rm -rf {} +

# 2. The virtualenv, with the project and its dependencies (wheels from PyPI).
"$PYTHON" -m venv "$venv"
PIP_NO_COMPILE=1 "$venv/bin/python" -m pip install -q --no-compile "$src"
# pip and setuptools are not needed at run time; the package's files are managed by dpkg.
"$venv/bin/python" -m pip uninstall -q -y pip setuptools
rm -f "$venv"/lib/python*/site-packages/mailtee-*.dist-info/direct_url.json
sed -i '/direct_url\.json/d' "$venv"/lib/python*/site-packages/mailtee-*.dist-info/RECORD

# 3. Default config.toml: what `proxy-admin init --state-dir /var/lib/mailtee` writes
#    (no listeners), generated from the config model, under a header of comments.
mkdir -p "$root/etc/mailtee"
{
    cat "$here/debian/config-header.toml"
    PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -c '
import tomli_w
from admin.config import Config, config_to_dict
print(tomli_w.dumps(config_to_dict(Config(state_dir="/var/lib/mailtee"))), end="")'
} > "$root/etc/mailtee/config.toml"
PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -c '
import sys, tomllib
from admin.config import parse_config
parse_config(tomllib.load(open(sys.argv[1], "rb")))' "$root/etc/mailtee/config.toml" \
    || die "the generated config.toml does not load"

# 4. Relocate: the venv was built under $venv but will live at $PREFIX. Only text files
#    in bin/ (shebangs, activate scripts) and pyvenv.cfg carry the build path; byte code is
#    not shipped (postinst compiles it at $PREFIX). Anything else that still names the
#    build directory fails the build.
find "$venv" -name __pycache__ -type d -prune -exec rm -rf {} +
find "$venv" -name '*.py[co]' -type f -delete
find "$venv" -name .gitignore -type f -delete     # a docs/.gitignore in aiosmtpd
for f in "$venv"/bin/* "$venv/pyvenv.cfg"; do
    if [ -f "$f" ] && [ ! -L "$f" ] && grep -Iq . "$f"; then sed -i "s|$venv|$PREFIX|g" "$f"; fi
done
if left=$(grep -rlF "$work" "$root"); then
    die "files still name the build directory: $left"
fi

# 5. The rest of the tree.
mkdir -p "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/share/doc/mailtee"
ln -s "$PREFIX/bin/proxy-admin" "$root/usr/bin/proxy-admin"
install -m 0644 "$top/systemd/mailtee.service" "$root/lib/systemd/system/mailtee.service"
install -m 0644 "$here/debian/copyright" "$root/usr/share/doc/mailtee/copyright"
when=$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)
commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
{
    echo "mailtee ($version) unstable; urgency=medium"
    echo
    echo "  * Built by packaging/build-deb.sh from commit $commit."
    echo
    echo " -- $MAINTAINER  $(LC_ALL=C date -R -u -d "@$when")"
} | gzip -9n > "$root/usr/share/doc/mailtee/changelog.gz"

# 6. Control area.
mkdir -p "$root/DEBIAN"
for s in postinst prerm postrm; do
    install -m 0755 "$here/debian/$s" "$root/DEBIAN/$s"
done
install -m 0644 "$here/debian/conffiles" "$root/DEBIAN/conffiles"
# Permissions as dpkg should install them, whatever the builder's umask was.
find "$root" -path "$root/DEBIAN" -prune -o -type d -exec chmod 0755 {} +
find "$root" -path "$root/DEBIAN" -prune -o -type f -exec chmod u+rw,go-w,go+r {} +
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@SIZE@|$size|" \
    -e "s|@MAINTAINER@|$MAINTAINER|" -e "s|@PYVER@|$pyver|" -e "s|@PYNEXT@|$pynext|" \
    "$here/debian/control.in" > "$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
    | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

mkdir -p "$OUT"
deb=$OUT/mailtee_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "build-deb: wrote $deb ($(du -h "$deb" | cut -f1))"
