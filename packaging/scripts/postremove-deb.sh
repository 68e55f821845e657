#!/bin/sh
# Debian postrm. On purge: remove the state, the user and the group, the
# keep-tcp.conf drop-ins postinst made on an upgrade, and the enable links
# of the units (deb-systemd-helper purge, as
# dh_installsystemd does). DKIM keys the postmaster made in
# /etc/mxdetour/dkim are kept: the directory is removed only when empty.
# A dpkg-statoverride the postmaster set stays: it is theirs.
set -e
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = purge ]; then
	if command -v deb-systemd-helper >/dev/null; then
		deb-systemd-helper purge mxdetour-policyd.service mxdetour-policyd.socket \
			mxdetour-policyd-socketmap.socket mxdetour-milter.service mxdetour-milter.socket >/dev/null || true
	fi
	rm -rf /var/lib/mxdetour
	# The drop-ins postinst made on an upgrade from TCP (keep-tcp.conf);
	# the postmaster's own drop-ins stay.
	for u in mxdetour-policyd mxdetour-policyd-socketmap mxdetour-milter; do
		rm -f "/etc/systemd/system/$u.socket.d/keep-tcp.conf"
		rmdir "/etc/systemd/system/$u.socket.d" 2>/dev/null || true
	done
	rmdir /etc/mxdetour/dkim 2>/dev/null || true
	rmdir /etc/mxdetour 2>/dev/null || true
	if getent passwd mxdetour >/dev/null; then deluser --quiet --system mxdetour >/dev/null 2>&1 || userdel mxdetour >/dev/null 2>&1 || true; fi
	if getent group mxdetour >/dev/null; then delgroup --quiet --system mxdetour >/dev/null 2>&1 || groupdel mxdetour >/dev/null 2>&1 || true; fi
fi
exit 0
