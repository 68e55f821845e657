#!/bin/sh
# Debian postrm and RPM %postun. On purge (Debian) or erase (RPM, $1 = 0):
# remove the state, the user and the group; on a Debian purge also the
# enable links of the units (deb-systemd-helper purge, as
# dh_installsystemd does). DKIM keys the postmaster made in
# /etc/mxdetour/dkim are kept: the directory is removed only when empty.
set -e
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null 2>&1 || true
fi
case "$1" in
	purge|0)
		if [ "$1" = purge ] && command -v deb-systemd-helper >/dev/null; then
			deb-systemd-helper purge mxdetour-policyd.service mxdetour-policyd.socket \
				mxdetour-policyd-socketmap.socket mxdetour-milter.service mxdetour-milter.socket >/dev/null || true
		fi
		rm -rf /var/lib/mxdetour
		rmdir /etc/mxdetour/dkim 2>/dev/null || true
		rmdir /etc/mxdetour 2>/dev/null || true
		if getent passwd mxdetour >/dev/null; then userdel mxdetour >/dev/null 2>&1 || true; fi
		if getent group mxdetour >/dev/null; then groupdel mxdetour >/dev/null 2>&1 || true; fi
		;;
esac
exit 0
