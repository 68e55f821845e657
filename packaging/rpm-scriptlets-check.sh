#!/usr/bin/env bash
# rpm-scriptlets-check.sh RPM: runs the RPM's own scriptlets (%pre, %post,
# %preun, %postun, as "rpm -qp" reads them from the package) the way rpm
# would on Fedora/RHEL 9, for an install ($1 = 1), an upgrade ($1 = 2 in
# %pre/%post of the new package, 1 in %preun/%postun of the old one) and an
# erase ($1 = 0), and checks what they did.
#
# Not a real Fedora root: no Fedora or Rocky package (not even a
# bootstrap) is reachable from the build machines, so the scriptlets run
# under /bin/sh with a PATH that holds only fakes with Fedora's semantics
# (shadow-utils' useradd/groupadd/usermod, which exit 2 on an option they
# do not know, such as Debian adduser's --quiet; systemd-sysusers, which
# makes the user from a sysusers.d file on stdin; getent that knows the
# users made so far; systemctl; postconf, with Postfix wired to the old
# loopback addresses, for the upgrade's keep-tcp.conf drop-ins) plus cat,
# rm, mkdir, rmdir and grep. Each fake records its call,
# so a Debian-only tool (adduser, deb-systemd-*) is simply not found. The
# scriptlets' absolute paths /run/systemd/system (systemd running or not),
# /etc/systemd/system and /var/lib/mxdetour are rewritten into a scratch
# root, so the state removal is real and harmless. "rpm -i --test" into an empty root checks
# the dependencies (no adduser).
# shellcheck disable=SC2016 # the fakes' bodies expand when they run
set -euo pipefail
rpm=$1
here=$(cd "$(dirname "$0")" && pwd)
fail() { echo "rpm scriptlets: $*" >&2; exit 1; }

t=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$t"' EXIT

# The four scriptlets, each checked with sh -n.
for tag in PREIN POSTIN PREUN POSTUN; do
	rpm -qp --qf "%{$tag}\n" "$rpm" 2>/dev/null > "$t/$tag.orig"
	[ "$(head -c 9 "$t/$tag.orig")" = '#!/bin/sh' ] || fail "$tag is missing"
	sh -n "$t/$tag.orig" || fail "$tag: sh -n"
	sed -e "s#/run/systemd/system#$t/root/run/systemd/system#g" \
		-e "s#/etc/systemd/system#$t/root/etc/systemd/system#g" \
		-e "s#/var/lib/mxdetour#$t/root/var/lib/mxdetour#g" "$t/$tag.orig" > "$t/$tag"
done
for tool in adduser addgroup deluser delgroup deb-systemd-helper deb-systemd-invoke dpkg-statoverride; do
	! grep -v "^[[:space:]]*#" "$t"/*.orig | grep -q "$tool" || fail "a scriptlet calls $tool, which Fedora lacks"
done
# %pre's sysusers.d lines are the shipped file's.
diff <(grep -v '^#' "$here/mxdetour.sysusers") <(sed -n '/<<.EOT.$/,/^EOT$/p' "$t/PREIN.orig" | sed '1d;$d') ||
	fail "%pre's sysusers.d lines differ from packaging/mxdetour.sysusers"

rpm --root "$t/rpmroot" --initdb
rpm --root "$t/rpmroot" -i --test "$rpm" 2>&1 | grep -v 'should not be used directly\|assuming you know' || true
rpm -qpR "$rpm" | grep -q adduser && fail "the rpm requires adduser"

# The fakes. $t/db holds the users and groups that exist.
mkdir -p "$t/bin"
ln -s "$(command -v cat)" "$(command -v rm)" "$(command -v mkdir)" "$(command -v rmdir)" "$(command -v grep)" "$t/bin/"
fake() { printf '#!/bin/bash\nlog=%q db=%q\n%s\n' "$t/calls" "$t/db" "$2" > "$t/bin/$1"; chmod +x "$t/bin/$1"; }
fake getent 'echo "getent $*" >> "$log"; grep -qx "$1:$2" "$db" 2>/dev/null'
fake groupadd 'echo "groupadd $*" >> "$log"
[ "$1" = -r ] && [ $# = 2 ] || { echo "groupadd: bad usage $*" >&2; exit 2; }
echo "group:$2" >> "$db"'
# shadow-utils useradd: these options only; an unknown one exits 2.
fake useradd 'echo "useradd $*" >> "$log"
while getopts rg:d:Ms:c:u: o; do [ "$o" != "?" ] || exit 2; done
shift $((OPTIND - 1)); [ $# = 1 ] || exit 2
grep -qx "group:$1" "$db" || { echo "useradd: group $1 missing" >&2; exit 6; }
echo "passwd:$1" >> "$db"'
fake usermod 'echo "usermod $*" >> "$log"; [ "$1" = -a ] && [ "$2" = -G ] || exit 2; grep -qx "group:$3" "$db" || exit 6'
fake systemd-sysusers 'in=$(cat); echo "systemd-sysusers $* <<$in" >> "$log"
[ "$1" = --replace=/usr/lib/sysusers.d/mxdetour.conf ] && [ "$2" = - ] || exit 1
case "$in" in "u mxdetour "*) grep -qx passwd:mxdetour "$db" || printf "group:mxdetour\npasswd:mxdetour\n" >> "$db" ;; esac'
fake systemctl 'echo "systemctl $*" >> "$log"'
# postconf -hx of the parameters %post looks at: Postfix still wired to
# the socketmap's and the milter's old loopback addresses.
fake postconf 'echo "postconf $*" >> "$log"
printf "socketmap:inet:127.0.0.1:10041:transport\npermit_mynetworks\n\ninet:127.0.0.1:10042\ninet:127.0.0.1:10042\n\n"'

# run SCRIPTLET ARG: one scriptlet as rpm runs it (sh, $1, exit status).
run() { : > "$t/calls"; env -i PATH="$t/bin" /bin/sh "$t/$1" "$2" > "$t/out" 2>&1 || { cat "$t/out" "$t/calls"; fail "$1 $2 exited $?"; }; }
called() { grep -q -- "$1" "$t/calls" || { cat "$t/calls"; fail "$2"; }; }
not_called() { ! grep -q -- "$1" "$t/calls" || { cat "$t/calls"; fail "$2"; }; }

for systemd in running none; do
	for sysusers in yes no; do
		echo "-- systemd $systemd, systemd-sysusers: $sysusers"
		rm -rf "$t/root" "$t/db"
		printf 'group:adm\n' > "$t/db" # Fedora has adm, not postfix until it is installed
		mkdir -p "$t/root"
		[ $systemd = none ] || mkdir -p "$t/root/run/systemd/system"
		[ $sysusers = yes ] || mv "$t/bin/systemd-sysusers" "$t/sysusers.off"

		# install
		run PREIN 1
		if [ $sysusers = yes ]; then
			called 'systemd-sysusers --replace=/usr/lib/sysusers.d/mxdetour.conf - <<u mxdetour' "%pre did not run systemd-sysusers"
			not_called useradd "%pre ran useradd beside systemd-sysusers"
		else
			called 'groupadd -r mxdetour' "%pre did not make the group"
			called 'useradd -r -g mxdetour' "%pre did not make the user"
		fi
		grep -qx passwd:mxdetour "$t/db" || fail "no user after %pre"
		called 'usermod -a -G adm mxdetour' "%pre did not add mxdetour to adm"
		not_called 'usermod -a -G postfix' "%pre used a group that does not exist"
		# rpm unpacks the payload: the state directory.
		mkdir -p "$t/root/var/lib/mxdetour" && echo '{}' > "$t/root/var/lib/mxdetour/state.json"
		run POSTIN 1
		not_called try-restart "%post 1 restarted something"
		not_called postconf "%post 1 looked for an old wiring"
		[ $systemd = none ] || called 'systemctl daemon-reload' "%post did not reload systemd"
		[ $systemd = running ] || not_called systemctl "%post called systemctl without systemd"
		grep -q 'installed but not started' "$t/out" || fail "%post 1 did not say how to start"

		# upgrade: new %pre 2, %post 2, then the old package's %preun 1, %postun 1
		run PREIN 2
		[ "$(grep -c passwd:mxdetour "$t/db")" = 1 ] || fail "%pre 2 made a second user"
		run POSTIN 2
		if [ $systemd = running ]; then
			called 'systemctl try-restart mxdetour-policyd.service mxdetour-milter.service' "%post 2 did not restart the daemons"
		fi
		# The TCP addresses Postfix is wired to are kept, beside the unix sockets.
		d=$t/root/etc/systemd/system
		grep -qx 'ListenStream=127.0.0.1:10041' "$d/mxdetour-policyd-socketmap.socket.d/keep-tcp.conf" || fail "%post 2 did not keep the socketmap's TCP address"
		grep -qx 'ListenStream=127.0.0.1:10042' "$d/mxdetour-milter.socket.d/keep-tcp.conf" || fail "%post 2 did not keep the milter's TCP address"
		[ ! -e "$d/mxdetour-policyd.socket.d" ] || fail "%post 2 kept a TCP address Postfix is not wired to"
		! grep -qx 'ListenStream=' "$d"/*/keep-tcp.conf || fail "keep-tcp.conf replaces the unix socket"
		grep -q 'mxdetour-policyd wire' "$t/out" || fail "%post 2 did not say how to move Postfix"
		run PREUN 1
		not_called 'disable\|stop' "%preun 1 (upgrade) stopped or disabled units"
		run POSTUN 1
		[ -f "$t/root/var/lib/mxdetour/state.json" ] || fail "%postun 1 (upgrade) removed the state"

		# erase
		run PREUN 0
		called 'systemctl --no-reload disable mxdetour-policyd.socket mxdetour-policyd-socketmap.socket mxdetour-milter.socket' "%preun 0 did not disable the units"
		if [ $systemd = running ]; then
			called 'systemctl stop mxdetour-policyd.socket' "%preun 0 did not stop the units"
		else
			not_called 'systemctl stop' "%preun 0 stopped units without systemd"
		fi
		run POSTUN 0
		[ ! -e "$t/root/var/lib/mxdetour" ] || fail "%postun 0 (erase) kept the state"
		[ -z "$(ls "$t/root/etc/systemd/system")" ] || fail "%postun 0 (erase) left $(ls "$t/root/etc/systemd/system")"
		[ $sysusers = yes ] || mv "$t/sysusers.off" "$t/bin/systemd-sysusers"
	done
done
echo "rpm scriptlets: OK"
