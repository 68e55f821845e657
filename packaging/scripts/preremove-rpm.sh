#!/bin/sh
# RPM %preun: on erase ($1 = 0, not on upgrade), disable the daemons and
# their sockets, and stop them before their files go, as %systemd_preun
# does. A socket left listening would start its service again at the
# next connection.
set -e
units="mxdetour-policyd.socket mxdetour-policyd-socketmap.socket mxdetour-milter.socket mxdetour-policyd.service mxdetour-milter.service"
if [ "$1" = 0 ]; then
	# shellcheck disable=SC2086 # one word per unit
	systemctl --no-reload disable $units >/dev/null 2>&1 || true
	if [ -d /run/systemd/system ]; then
		# shellcheck disable=SC2086
		systemctl stop $units >/dev/null 2>&1 || true
	fi
fi
exit 0
