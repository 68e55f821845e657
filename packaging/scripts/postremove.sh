#!/bin/sh
# On purge (Debian) or erase (RPM, $1 = 0): remove the state, the user and
# the group. DKIM keys the postmaster made in /etc/mxdetour/dkim are kept:
# the directory is removed only when empty.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
case "$1" in
	purge|0)
		rm -rf /var/lib/mxdetour
		rmdir /etc/mxdetour/dkim 2>/dev/null || true
		rmdir /etc/mxdetour 2>/dev/null || true
		if getent passwd mxdetour >/dev/null; then userdel mxdetour >/dev/null 2>&1 || true; fi
		if getent group mxdetour >/dev/null; then groupdel mxdetour >/dev/null 2>&1 || true; fi
		;;
esac
exit 0
