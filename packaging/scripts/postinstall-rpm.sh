#!/bin/sh
# RPM %post: $1 is 1 on install, 2 on upgrade. Enable nothing: the
# postmaster decides. Ownerships come with the payload (/var/lib/mxdetour
# and /etc/mxdetour/dkim belong to the package; %pre made the user). On
# an upgrade, restart the daemons that run (as %systemd_postun_with_restart
# would; here in the new package's %post, since the %postun that runs on an
# upgrade is the old package's).
#
# The services restart, never their socket units: systemd keeps the
# sockets listening while a service restarts, so Postfix's connections
# wait in the queue for the new daemon instead of being refused (a
# refused socketmap makes Postfix defer mail). A changed ListenStream=
# takes effect when the postmaster restarts the socket with its service.
set -e
services="mxdetour-policyd.service mxdetour-milter.service"

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	if [ "$1" -ge 2 ]; then
		# shellcheck disable=SC2086 # one word per unit
		systemctl try-restart $services >/dev/null 2>&1 || true
	fi
fi

if [ "$1" = 1 ]; then
	cat <<'EOT'
mxdetour is installed but not started. Edit /etc/mxdetour/mxdetour.toml,
add /usr/share/doc/mxdetour/postfix/main.cf and master.cf to Postfix, then
enable and start both daemons, their sockets with them (Also=), with
"systemctl enable --now mxdetour-policyd mxdetour-milter".
EOT
fi
exit 0
