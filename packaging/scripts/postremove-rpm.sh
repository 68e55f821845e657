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
fi
exit 0
