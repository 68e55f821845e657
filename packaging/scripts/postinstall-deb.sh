#!/bin/sh
# Debian postinst. Create the system user (systemd-sysusers with the
# package's /usr/lib/sysusers.d/mxdetour.conf where it exists, else
# adduser), set ownerships unless the postmaster set them with
# dpkg-statoverride; enable nothing: the postmaster decides. On an upgrade
# ($2 is the old version), restart the daemons that run.
#
# The units are handled as dh_installsystemd --no-enable --no-start does,
# through deb-systemd-helper and deb-systemd-invoke: each unit's enable
# links are recorded, so that a purge removes the links that
# "systemctl enable" made; a unit that was enabled stays enabled; and
# only what runs is restarted (try-restart).
#
# The services restart, never their socket units: systemd keeps the
# sockets listening while a service restarts, so Postfix's connections
# wait in the queue for the new daemon instead of being refused (a
# refused socketmap makes Postfix defer mail). A changed ListenStream=
# takes effect when the postmaster restarts the socket with its service.
set -e
units="mxdetour-policyd.service mxdetour-policyd.socket mxdetour-policyd-socketmap.socket mxdetour-milter.service mxdetour-milter.socket"
services="mxdetour-policyd.service mxdetour-milter.service"

case "$1" in
configure|abort-upgrade|abort-deconfigure|abort-remove) ;;
*) exit 0 ;;
esac

if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers mxdetour.conf
else
	if ! getent group mxdetour >/dev/null; then addgroup --system --quiet mxdetour; fi
	if ! getent passwd mxdetour >/dev/null; then
		adduser --system --quiet --ingroup mxdetour --home /var/lib/mxdetour --no-create-home \
			--shell /usr/sbin/nologin --gecos "mxdetour daemons" mxdetour
	fi
fi
# Unix sockets the daemon opens itself in Postfix's spool, and reading the
# mail log, and postqueue -i (learn.requeue), need these groups; only where
# they exist (never created here).
for g in postfix postdrop adm; do
	if getent group "$g" >/dev/null; then usermod -a -G "$g" mxdetour || true; fi
done

# own PATH OWNER:GROUP MODE: set the ownership and mode unless the
# postmaster overrode them with dpkg-statoverride (e.g. a key directory
# group-readable by another signer); dpkg applies an override itself.
own() {
	if ! dpkg-statoverride --list "$1" >/dev/null 2>&1; then
		chown "$2" "$1"
		chmod "$3" "$1"
	fi
}
mkdir -p /var/lib/mxdetour
own /var/lib/mxdetour mxdetour:mxdetour 0750
own /etc/mxdetour/dkim root:mxdetour 0750

for u in $units; do
	if deb-systemd-helper debian-installed "$u" && deb-systemd-helper --quiet was-enabled "$u"; then
		deb-systemd-helper enable "$u" >/dev/null || true
	fi
	deb-systemd-helper update-state "$u" >/dev/null || true
done
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
	if [ -n "$2" ]; then
		# shellcheck disable=SC2086 # one word per unit
		deb-systemd-invoke try-restart $services >/dev/null || true
	fi
fi

if [ "$1" = configure ] && [ -z "$2" ]; then
	cat <<'EOT'
mxdetour is installed but not started. Edit /etc/mxdetour/mxdetour.toml,
add /usr/share/doc/mxdetour/postfix/main.cf and master.cf to Postfix, then
enable and start both daemons, their sockets with them (Also=), with
"systemctl enable --now mxdetour-policyd mxdetour-milter".
EOT
fi
exit 0
