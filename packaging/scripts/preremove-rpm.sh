#!/bin/sh
# RPM %preun: on erase ($1 = 0, not on upgrade), disable the daemons and
# their sockets, and stop them before their files go, as %systemd_preun
# does. A socket left listening would start its service again at the
# next connection.
set -e
units="mxdetour-policyd.socket mxdetour-policyd-socketmap.socket mxdetour-milter.socket mxdetour-policyd.service mxdetour-milter.service"
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
if [ "$1" = 0 ]; then
	unwire
	# shellcheck disable=SC2086 # one word per unit
	systemctl --no-reload disable $units >/dev/null 2>&1 || true
	if [ -d /run/systemd/system ]; then
		# shellcheck disable=SC2086
		systemctl stop $units >/dev/null 2>&1 || true
	fi
fi
exit 0
