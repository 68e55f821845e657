#!/bin/sh
# Create the system user the daemons run as.
set -e
if ! getent group mxdetour >/dev/null; then
	if command -v addgroup >/dev/null 2>&1; then addgroup --system --quiet mxdetour; else groupadd -r mxdetour; fi
fi
if ! getent passwd mxdetour >/dev/null; then
	if command -v adduser >/dev/null 2>&1; then
		adduser --system --quiet --ingroup mxdetour --home /var/lib/mxdetour --no-create-home \
			--shell /usr/sbin/nologin --gecos "mxdetour daemons" mxdetour
	else
		useradd -r -g mxdetour -d /var/lib/mxdetour -M -s /sbin/nologin -c "mxdetour daemons" mxdetour
	fi
fi
# Unix sockets in Postfix's spool and reading the mail log need these groups.
for g in postfix adm; do
	if getent group "$g" >/dev/null; then
		if command -v usermod >/dev/null 2>&1; then usermod -a -G "$g" mxdetour; fi
	fi
done
exit 0
