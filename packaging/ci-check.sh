#!/usr/bin/env bash
# Checks the packages as a postmaster would meet them, on a Debian 12
# machine, as root: builds them, runs lintian, installs the .deb, checks
# files, user and permissions, validates the installed config with both
# binaries, verifies the systemd units, purges, and checks nothing is left;
# lists the .rpm. The machine is changed; use a disposable one (CI).
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "packaging check: $*" >&2; exit 1; }

DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends lintian rpm systemd adduser >/dev/null
rm -rf dist
make deb rpm >/dev/null
deb=$(ls dist/mxdetour_*.deb)
rpm=$(ls dist/mxdetour-*.rpm)

echo "== lintian"
lintian --fail-on error "$deb" 2>&1 | grep -v 'running with root privileges' || true
lintian --fail-on error "$deb" >/dev/null 2>&1 || fail "lintian reports errors"

echo "== install"
DEBIAN_FRONTEND=noninteractive apt-get install -y "./$deb" >/dev/null
getent passwd mxdetour >/dev/null || fail "user mxdetour missing"
for f in /usr/sbin/mxdetour-policyd /usr/sbin/mxdetour-milter /etc/mxdetour/mxdetour.toml \
	/lib/systemd/system/mxdetour-policyd.service /lib/systemd/system/mxdetour-milter.service \
	/usr/share/doc/mxdetour/copyright /usr/share/doc/mxdetour/postfix/main.cf \
	/usr/share/man/man8/mxdetour-policyd.8.gz /usr/share/man/man8/mxdetour-milter.8.gz /usr/share/man/man5/mxdetour.toml.5.gz; do
	[ -e "$f" ] || fail "$f not installed"
done
[ "$(stat -c '%a %U %G' /etc/mxdetour/dkim)" = "750 root mxdetour" ] || fail "/etc/mxdetour/dkim: $(stat -c '%a %U %G' /etc/mxdetour/dkim)"
[ "$(stat -c '%a %U %G' /var/lib/mxdetour)" = "750 mxdetour mxdetour" ] || fail "/var/lib/mxdetour: $(stat -c '%a %U %G' /var/lib/mxdetour)"
grep -q '^/etc/mxdetour/mxdetour.toml$' "/var/lib/dpkg/info/mxdetour.conffiles" || fail "mxdetour.toml is not a conffile"
if systemctl is-enabled mxdetour-policyd >/dev/null 2>&1; then fail "the package enabled a unit by itself"; fi

echo "== check-config"
/usr/sbin/mxdetour-policyd -check-config
/usr/sbin/mxdetour-milter -check-config

echo "== systemd-analyze verify"
systemd-analyze verify --man=no /lib/systemd/system/mxdetour-policyd.service /lib/systemd/system/mxdetour-milter.service

echo "== purge"
DEBIAN_FRONTEND=noninteractive apt-get purge -y mxdetour >/dev/null
for f in /usr/sbin/mxdetour-policyd /etc/mxdetour /var/lib/mxdetour /lib/systemd/system/mxdetour-policyd.service; do
	[ ! -e "$f" ] || fail "$f left after purge"
done
! getent passwd mxdetour >/dev/null || fail "user mxdetour left after purge"
! getent group mxdetour >/dev/null || fail "group mxdetour left after purge"

echo "== rpm"
rpm -qlp "$rpm" > dist/rpm-files.txt
cat dist/rpm-files.txt
grep -q '^/usr/lib/systemd/system/mxdetour-policyd.service$' dist/rpm-files.txt || fail "rpm lacks the unit"
echo "packaging check: OK"
