#!/bin/sh
# RPM %postun: $1 is 0 after an erase, 1 after an upgrade (the old
# package's files are gone, the new one's stay). Only an erase removes the
# state in /var/lib/mxdetour (learned blocks, DKIM rotation state); an
# upgrade keeps it. The directories themselves belong to the package: rpm
# removes them when empty. DKIM keys the postmaster made in
# /etc/mxdetour/dkim are kept. The user and group stay, as Fedora's
# packaging guidelines ask: files they own may remain, and a reused id
# would hand them to someone else.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" = 0 ]; then
	rm -rf /var/lib/mxdetour
	# The drop-ins %post made on an upgrade from TCP (keep-tcp.conf); the
	# postmaster's own drop-ins stay.
	for u in mxdetour-policyd mxdetour-policyd-socketmap mxdetour-milter; do
		rm -f "/etc/systemd/system/$u.socket.d/keep-tcp.conf"
		rmdir "/etc/systemd/system/$u.socket.d" 2>/dev/null || true
	done
fi
exit 0
