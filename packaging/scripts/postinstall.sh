#!/bin/sh
# Set ownerships; enable nothing: the postmaster decides.
set -e
mkdir -p /var/lib/mxdetour
chown mxdetour:mxdetour /var/lib/mxdetour
chmod 0750 /var/lib/mxdetour
chgrp mxdetour /etc/mxdetour/dkim
chmod 0750 /etc/mxdetour/dkim
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
cat <<'EOT'
mxdetour is installed but not started. Edit /etc/mxdetour/mxdetour.toml,
add /usr/share/doc/mxdetour/postfix/main.cf and master.cf to Postfix, then:
  systemctl enable --now mxdetour-policyd mxdetour-milter
EOT
exit 0
