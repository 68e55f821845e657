#!/bin/sh
# RPM %pre ($1 is 1 on install, 2 on upgrade): create the system user and
# group before the payload is unpacked, which owns /var/lib/mxdetour and
# /etc/mxdetour/dkim by that name. As Fedora's %sysusers_create_compat does:
# systemd-sysusers reads the package's sysusers.d file from stdin
# (--replace: the file itself is not unpacked yet); where systemd-sysusers
# is missing, useradd -r. No Debian tools: RHEL's "adduser" is useradd and
# knows no --quiet. Keep the heredoc equal to packaging/mxdetour.sysusers
# (ci-check.sh compares them).
set -e
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers --replace=/usr/lib/sysusers.d/mxdetour.conf - <<'EOT'
u mxdetour - "mxdetour daemons" /var/lib/mxdetour /usr/sbin/nologin
EOT
else
	getent group mxdetour >/dev/null || groupadd -r mxdetour
	getent passwd mxdetour >/dev/null ||
		useradd -r -g mxdetour -d /var/lib/mxdetour -M -s /usr/sbin/nologin -c "mxdetour daemons" mxdetour
fi
# Unix sockets the daemon opens itself in Postfix's spool, and reading the
# mail log, and postqueue -i (learn.requeue), need these groups; only where
# they exist (never created here).
for g in postfix postdrop adm; do
	if getent group "$g" >/dev/null; then usermod -a -G "$g" mxdetour || true; fi
done
exit 0
