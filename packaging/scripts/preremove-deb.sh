#!/bin/sh
# Debian prerm: on remove (not on upgrade), stop the daemons before their
# files go, and their sockets with them: a socket left listening would
# start its service again at the next connection. Enabled units stay
# enabled until a purge (see postremove.sh), as with dh_installsystemd.
set -e
# Postfix wired by `mxdetour-policyd wire` would defer every message once
# our sockets are gone (a table that fails defers, and Postfix's tables
# name them): give Postfix back its own configuration first. wire leaves
# a record in the instance's configuration directory; unwire restores
# main.cf and master.cf as they were and reloads Postfix.
unwire() {
	dir=$(postconf -h config_directory 2>/dev/null) || dir=/etc/postfix
	if [ -e "$dir/mxdetour-wire.json" ] && command -v mxdetour-policyd >/dev/null 2>&1; then
		if ! mxdetour-policyd unwire; then
			echo "mxdetour: unwire failed: Postfix's configuration still names mxdetour's sockets;" >&2
			echo "mxdetour: remove them from $dir/main.cf and master.cf, or mail is deferred until you do." >&2
		fi
	fi
}
if [ -z "${DPKG_ROOT:-}" ] && [ "$1" = remove ]; then
	unwire
fi
if [ -z "${DPKG_ROOT:-}" ] && [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	deb-systemd-invoke stop mxdetour-policyd.socket mxdetour-policyd-socketmap.socket mxdetour-milter.socket \
		mxdetour-policyd.service mxdetour-milter.service >/dev/null || true
fi
exit 0
