#!/bin/sh
# Debian prerm: on remove (not on upgrade), stop the daemons before their
# files go, and their sockets with them: a socket left listening would
# start its service again at the next connection. Enabled units stay
# enabled until a purge (see postremove.sh), as with dh_installsystemd.
set -e
if [ -z "${DPKG_ROOT:-}" ] && [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	deb-systemd-invoke stop mxdetour-policyd.socket mxdetour-policyd-socketmap.socket mxdetour-milter.socket \
		mxdetour-policyd.service mxdetour-milter.service >/dev/null || true
fi
exit 0
