#!/bin/sh
# Stop the daemons before their files go (remove or purge, not upgrade).
set -e
case "$1" in
	remove|purge|0)
		if [ -d /run/systemd/system ]; then
			systemctl stop mxdetour-policyd.service mxdetour-milter.service >/dev/null 2>&1 || true
			systemctl disable mxdetour-policyd.service mxdetour-milter.service >/dev/null 2>&1 || true
		fi
		;;
esac
exit 0
