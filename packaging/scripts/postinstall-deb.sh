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
# takes effect when the postmaster restarts the socket with its service;
# an upgrade from units on loopback TCP keeps the TCP addresses Postfix is
# wired to (keep_tcp below).
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

# --- keep-tcp: the same lines in postinstall-deb.sh and postinstall-rpm.sh
# (ci-check.sh compares them).
# keep_tcp: earlier versions had the socket units listen on loopback TCP
# (127.0.0.1:10040, 10041, 10042); now they listen on unix sockets in
# Postfix's spool, from the next start of a socket unit (a restart, a
# boot). A Postfix still wired to the old addresses would then find
# nothing there: the socketmap refused defers all mail. For each port
# Postfix's wiring names, a drop-in adds the old address beside the unix
# socket (a socket unit may list several ListenStream=), and a notice says
# how to move Postfix and drop them. Nothing else is changed.
keep_tcp() {
	command -v postconf >/dev/null 2>&1 || return 0
	wired=$(postconf -hx transport_maps smtpd_recipient_restrictions smtpd_end_of_data_restrictions \
		smtpd_milters non_smtpd_milters smtp_delivery_status_filter 2>/dev/null) || return 0
	kept=
	for s in mxdetour-policyd:10040 mxdetour-policyd-socketmap:10041 mxdetour-milter:10042; do
		unit=${s%:*}.socket
		port=${s#*:}
		case $wired in
		*127.0.0.1:$port* | *127.0.0.1]:$port* | *localhost:$port*) ;;
		*) continue ;;
		esac
		mkdir -p "/etc/systemd/system/$unit.d"
		cat > "/etc/systemd/system/$unit.d/keep-tcp.conf" <<EOT
# Added by mxdetour's package on upgrade: Postfix was wired to
# 127.0.0.1:$port, where $unit listened before it moved to
# a unix socket in Postfix's spool. This keeps that address beside it.
# Whoever can connect to it can ask and count: any local user. Run
# "mxdetour-policyd wire" (it moves Postfix to the unix sockets), then
# remove this file, "systemctl daemon-reload" and restart the socket
# with its service.
[Socket]
ListenStream=127.0.0.1:$port
EOT
		kept="$kept $unit"
	done
	[ -n "$kept" ] || return 0
	cat <<EOT

mxdetour: the socket units now listen on unix sockets in Postfix's spool
(/var/spool/postfix/private/mxdetour-*), which only Postfix can open.
Postfix is still wired to 127.0.0.1, so these keep their TCP address too
(/etc/systemd/system/UNIT.d/keep-tcp.conf):$kept
Any local user can connect to a TCP socket, ask and count. To close them:
  1. systemctl restart mxdetour-policyd.socket mxdetour-policyd-socketmap.socket
       mxdetour-milter.socket mxdetour-policyd mxdetour-milter
     (the unix sockets appear; TCP stays)
  2. check that /etc/mxdetour/mxdetour.toml's policyd.policy_listen,
     policyd.socketmap_listen and milter.listen name the unix sockets (as
     /usr/share/doc/mxdetour/examples/mxdetour.toml does), then
     mxdetour-policyd wire
     which moves Postfix to them;
  3. rm /etc/systemd/system/mxdetour-*.socket.d/keep-tcp.conf;
     systemctl daemon-reload; and the restart of step 1 again.

EOT
}
# --- keep-tcp end

# An upgrade: keep Postfix's TCP wiring working (before daemon-reload).
if [ "$1" = configure ] && [ -n "$2" ] && [ -z "${DPKG_ROOT:-}" ]; then
	keep_tcp
fi

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
enable and start both daemons, their sockets with them (Also=), with
"systemctl enable --now mxdetour-policyd mxdetour-milter", then wire
Postfix to their unix sockets in its spool with "mxdetour-policyd wire"
(or by hand: /usr/share/doc/mxdetour/postfix/main.cf and master.cf).
EOT
fi
exit 0
