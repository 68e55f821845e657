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
# takes effect when the postmaster restarts the socket with its service;
# an upgrade from units on loopback TCP keeps the TCP addresses Postfix is
# wired to (keep_tcp below).
set -e
services="mxdetour-policyd.service mxdetour-milter.service"

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
if [ "$1" -ge 2 ]; then
	keep_tcp
fi

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
enable and start both daemons, their sockets with them (Also=), with
"systemctl enable --now mxdetour-policyd mxdetour-milter", then wire
Postfix to their unix sockets in its spool with "mxdetour-policyd wire"
(or by hand: /usr/share/doc/mxdetour/postfix/main.cf and master.cf).
EOT
fi
exit 0
