#!/usr/bin/env bash
# Checks the packages as a postmaster would meet them, on a Debian 12
# machine, as root: builds them, runs lintian, installs the .deb, checks
# files, user and permissions, validates the installed config with both
# binaries, checks it names the socket units' unix sockets and differs
# from contrib/mxdetour.toml in those four keys only, verifies the systemd
# units, enables them as the postmaster would, reinstalls (the upgrade
# path), purges, and checks nothing is left, enable links included; checks
# a dpkg-statoverride survives a reinstall; upgrades with Postfix wired to
# the old loopback TCP addresses (a fake postconf says so) and checks the
# keep-tcp.conf drop-ins and the notice;
# lists the .rpm and runs its scriptlets for install, upgrade and erase
# under a harness with Fedora's tools faked (rpm-scriptlets-check.sh says
# why not a Fedora root). The machine is changed; use a disposable one (CI).
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "packaging check: $*" >&2; exit 1; }

DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends lintian rpm systemd adduser >/dev/null
rm -rf dist
make deb rpm >/dev/null
deb=$(ls dist/mxdetour_*.deb)
rpm=$(ls dist/mxdetour-*.rpm)

# postconf as the postinst's keep_tcp asks it, answering from $fake/wired
# (what Postfix is wired to); any other call goes to Postfix's own, if any.
# Every reinstall below runs with it first in PATH, so that a Postfix on
# this machine does not decide what an upgrade does; with dpkg -i, since
# apt-get does not hand its PATH on to the maintainer scripts (the
# dependencies are installed by then; postinst runs "configure OLDVERSION"
# either way).
fake=$(mktemp -d)
trap 'rm -rf "$fake"' EXIT
cat > "$fake/postconf" <<EOF
#!/bin/sh
if [ "\$*" = "-hx transport_maps smtpd_recipient_restrictions smtpd_end_of_data_restrictions smtpd_milters non_smtpd_milters smtp_delivery_status_filter" ]; then
	cat "$fake/wired"
	exit
fi
exec /usr/sbin/postconf "\$@"
EOF
chmod 755 "$fake/postconf"
printf 'socketmap:unix:private/mxdetour-socketmap:transport\n\n\nunix:private/mxdetour-milter\nunix:private/mxdetour-milter\n\n' > "$fake/wired"

units="mxdetour-policyd.service mxdetour-policyd.socket mxdetour-policyd-socketmap.socket mxdetour-milter.service mxdetour-milter.socket"
# enable_links lists the links "systemctl enable" makes for our units.
enable_links() { find /etc/systemd/system -name 'mxdetour-*' | sort; }

echo "== lintian"
# Warnings count too: what is meant stays in packaging/lintian-overrides,
# each with its reason; info tags (an override no longer used) are shown.
lintian -I --fail-on error,warning "$deb" 2>&1 | grep -v 'running with root privileges' || true
lintian --fail-on error,warning "$deb" >/dev/null 2>&1 || fail "lintian reports errors or warnings"

echo "== install"
DEBIAN_FRONTEND=noninteractive apt-get install -y "./$deb" >/dev/null
getent passwd mxdetour >/dev/null || fail "user mxdetour missing"
for f in /usr/sbin/mxdetour-policyd /usr/sbin/mxdetour-milter /etc/mxdetour/mxdetour.toml \
	$(for u in $units; do echo "/lib/systemd/system/$u"; done) \
	/usr/share/doc/mxdetour/copyright /usr/share/doc/mxdetour/postfix/main.cf \
	/usr/share/doc/mxdetour/changelog.Debian.gz /usr/share/doc/mxdetour/README.Debian \
	/usr/share/doc/mxdetour/examples/mxdetour.toml /usr/lib/sysusers.d/mxdetour.conf \
	/usr/share/man/man8/mxdetour-policyd.8.gz /usr/share/man/man8/mxdetour-milter.8.gz /usr/share/man/man5/mxdetour.toml.5.gz; do
	[ -e "$f" ] || fail "$f not installed"
done
[ "$(stat -c '%a %U %G' /etc/mxdetour/dkim)" = "750 root mxdetour" ] || fail "/etc/mxdetour/dkim: $(stat -c '%a %U %G' /etc/mxdetour/dkim)"
[ "$(stat -c '%a %U %G' /var/lib/mxdetour)" = "750 mxdetour mxdetour" ] || fail "/var/lib/mxdetour: $(stat -c '%a %U %G' /var/lib/mxdetour)"
grep -q '^/etc/mxdetour/mxdetour.toml$' "/var/lib/dpkg/info/mxdetour.conffiles" || fail "mxdetour.toml is not a conffile"
[ -z "$(enable_links)" ] || fail "the package enabled units by itself: $(enable_links)"
[ ! -e /usr/share/doc/mxdetour/changelog.gz ] || fail "the git log is installed as changelog.gz"
zcat /usr/share/doc/mxdetour/changelog.Debian.gz | head -1 | grep -q '^mxdetour (' || fail "changelog.Debian.gz is not a Debian changelog"
[ "$(getent passwd mxdetour | cut -d: -f5-7)" = "mxdetour daemons:/var/lib/mxdetour:/usr/sbin/nologin" ] ||
	fail "user mxdetour is not the sysusers.d one: $(getent passwd mxdetour)"

echo "== the packaged mxdetour.toml"
# contrib/mxdetour.toml (the embedded defaults, loopback TCP) but for the
# three listen keys, on the units' unix sockets, and milter.policyd_listen,
# on the policy unit's abstract socket; packaging_test.go checks what it
# means.
for f in /etc/mxdetour/mxdetour.toml /usr/share/doc/mxdetour/examples/mxdetour.toml; do
	changed=$(diff contrib/mxdetour.toml "$f" | sed -nE 's/^> *([a-z_]+) *= *"([^"]*)".*/\1=\2/p' | tr '\n' ' ') || true
	[ "$changed" = "policy_listen=unix:/var/spool/postfix/private/mxdetour-policy socketmap_listen=unix:/var/spool/postfix/private/mxdetour-socketmap listen=unix:/var/spool/postfix/private/mxdetour-milter policyd_listen=unix:@mxdetour-policy " ] ||
		fail "$f differs from contrib/mxdetour.toml in: $changed"
	[ "$(diff contrib/mxdetour.toml "$f" | grep -c '^[<>]')" = 8 ] || fail "$f differs from contrib/mxdetour.toml in more than four lines"
done
for u in mxdetour-policyd mxdetour-policyd-socketmap mxdetour-milter; do
	for path in $(sed -n 's/^ListenStream=//p' "/lib/systemd/system/$u.socket"); do
		grep -q "\"unix:$path\"" /etc/mxdetour/mxdetour.toml || fail "mxdetour.toml does not name $u.socket's $path"
	done
done

echo "== check-config"
/usr/sbin/mxdetour-policyd -check-config
/usr/sbin/mxdetour-milter -check-config

echo "== systemd-analyze verify"
# shellcheck disable=SC2046,SC2086 # one word per unit
systemd-analyze verify --man=no $(for u in $units; do echo "/lib/systemd/system/$u"; done)

echo "== TCP drop-ins"
# The examples, installed as the postmaster would, still verify.
for u in mxdetour-policyd.socket mxdetour-policyd-socketmap.socket mxdetour-milter.socket; do
	mkdir -p "/etc/systemd/system/$u.d"
	cp "/usr/share/doc/mxdetour/examples/systemd/tcp/$u.d/tcp.conf" "/etc/systemd/system/$u.d/"
done
# shellcheck disable=SC2046,SC2086 # one word per unit
systemd-analyze verify --man=no $(for u in $units; do echo "/lib/systemd/system/$u"; done)
rm -rf /etc/systemd/system/mxdetour-*.socket.d

echo "== sandbox: exposure and system calls"
packaging/syscall-check.sh

echo "== enable, reinstall"
# As the postmaster does (postinst's hint); Also= brings the sockets.
systemctl enable mxdetour-policyd mxdetour-milter
links=$(enable_links)
echo "$links"
for u in mxdetour-policyd.socket mxdetour-policyd-socketmap.socket mxdetour-milter.socket; do
	echo "$links" | grep -q "/sockets.target.wants/$u\$" || fail "enabling the services did not enable $u"
done
# A reinstall runs postinst as an upgrade does ("configure OLDVERSION"):
# what was enabled stays enabled.
PATH="$fake:$PATH" dpkg -i "$deb" >/dev/null
[ "$(enable_links)" = "$links" ] || fail "the enable links changed on reinstall: $(enable_links)"

echo "== dpkg-statoverride"
# The postmaster's override wins over the postinst's chown/chmod.
dpkg-statoverride --update --add root mxdetour 0710 /etc/mxdetour/dkim
PATH="$fake:$PATH" dpkg -i "$deb" >/dev/null
[ "$(stat -c '%a %U %G' /etc/mxdetour/dkim)" = "710 root mxdetour" ] || fail "the postinst overrode dpkg-statoverride: $(stat -c '%a %U %G' /etc/mxdetour/dkim)"
dpkg-statoverride --remove /etc/mxdetour/dkim

echo "== upgrade with Postfix wired to loopback TCP"
# Wired as before the sockets moved to Postfix's spool: the socketmap and
# the milter (not the policy service) keep their old address beside the
# unix socket, and the notice says how to move Postfix.
printf 'socketmap:inet:127.0.0.1:10041:transport\npermit_mynetworks\n\ninet:127.0.0.1:10042\ninet:127.0.0.1:10042\n\n' > "$fake/wired"
PATH="$fake:$PATH" dpkg -i "$deb" > dist/upgrade.out 2>&1 || { cat dist/upgrade.out; fail "the upgrade failed"; }
grep -q 'mxdetour-policyd wire' dist/upgrade.out || { cat dist/upgrade.out; fail "no notice about the kept TCP addresses"; }
[ "$(cat /etc/systemd/system/mxdetour-policyd-socketmap.socket.d/keep-tcp.conf /etc/systemd/system/mxdetour-milter.socket.d/keep-tcp.conf | grep '^ListenStream')" = "$(printf 'ListenStream=127.0.0.1:10041\nListenStream=127.0.0.1:10042')" ] ||
	fail "keep-tcp.conf: $(grep -r ListenStream /etc/systemd/system/mxdetour-*.socket.d/)"
[ ! -e /etc/systemd/system/mxdetour-policyd.socket.d ] || fail "a TCP address Postfix is not wired to was kept"
# shellcheck disable=SC2046,SC2086 # one word per unit
systemd-analyze verify --man=no $(for u in $units; do echo "/lib/systemd/system/$u"; done)
# Once Postfix is wired to the unix sockets, an upgrade adds nothing; the
# drop-ins stay until the postmaster removes them (the purge does, below).
printf 'socketmap:unix:private/mxdetour-socketmap:transport\n\n\nunix:private/mxdetour-milter\n\n\n' > "$fake/wired"
PATH="$fake:$PATH" dpkg -i "$deb" > dist/upgrade.out 2>&1 || { cat dist/upgrade.out; fail "the upgrade failed"; }
! grep -q 'mxdetour-policyd wire' dist/upgrade.out || fail "a notice with Postfix on the unix sockets"
[ ! -e /etc/systemd/system/mxdetour-policyd.socket.d ] || fail "keep-tcp.conf for the policy socket"

echo "== purge"
DEBIAN_FRONTEND=noninteractive apt-get purge -y mxdetour >/dev/null
for f in /usr/sbin/mxdetour-policyd /etc/mxdetour /var/lib/mxdetour /lib/systemd/system/mxdetour-policyd.service /lib/systemd/system/mxdetour-policyd.socket; do
	[ ! -e "$f" ] || fail "$f left after purge"
done
[ -z "$(enable_links)" ] || fail "enable links left after purge: $(enable_links)"
[ -z "$(find /var/lib/systemd/deb-systemd-helper-* -name 'mxdetour-*' 2>/dev/null)" ] || fail "deb-systemd-helper state left after purge"
! getent passwd mxdetour >/dev/null || fail "user mxdetour left after purge"
! getent group mxdetour >/dev/null || fail "group mxdetour left after purge"

echo "== rpm"
rpm -qlp "$rpm" > dist/rpm-files.txt
cat dist/rpm-files.txt
for u in $units; do
	grep -q "^/usr/lib/systemd/system/$u\$" dist/rpm-files.txt || fail "rpm lacks $u"
done
# Its own scripts, not Debian's: stop and disable the sockets on erase, no deb-systemd-*.
rpm -qp --scripts "$rpm" > dist/rpm-scripts.txt
grep -q -- '--no-reload disable' dist/rpm-scripts.txt || fail "rpm's preun does not disable the units"
grep -q 'mxdetour-policyd-socketmap.socket' dist/rpm-scripts.txt || fail "rpm's scripts do not name the sockets"
! grep -q 'deb-systemd-invoke' dist/rpm-scripts.txt || fail "rpm carries Debian's scripts"
echo "== rpm scriptlets"
packaging/rpm-scriptlets-check.sh "$rpm"
echo "packaging check: OK"
