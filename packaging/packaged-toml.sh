#!/bin/sh
# packaged-toml.sh FILE: prints FILE (contrib/mxdetour.toml, which is
# config.Default() and what "make run" uses: loopback TCP) as the packages
# install it in /etc/mxdetour/mxdetour.toml: the same file but for exactly
# three keys, the unix sockets in Postfix's spool that the socket units of
# contrib/systemd make (the daemons take their sockets from systemd and
# warn when the configured address differs; "mxdetour-policyd wire" wires
# Postfix for these). Fails unless it replaced exactly those three lines.
# The Makefile's "packages" target runs it; packaging/packaging_test.go
# and ci-check.sh check its output.
set -eu
awk '
/^\[/ { section = $0 }
function set(path) {
	if (!sub(/"[^"]*"/, "\"unix:/var/spool/postfix/private/" path "\"")) { bad = 1 }
	n++
}
section == "[policyd]" && /^policy_listen[ \t]*=/ { set("mxdetour-policy") }
section == "[policyd]" && /^socketmap_listen[ \t]*=/ { set("mxdetour-socketmap") }
section == "[milter]" && /^listen[ \t]*=/ { set("mxdetour-milter") }
{ print }
END {
	if (n != 3 || bad) {
		print "packaged-toml.sh: replaced " n " listen lines, want policyd.policy_listen, policyd.socketmap_listen and milter.listen" > "/dev/stderr"
		exit 1
	}
}
' "$1"
