#!/bin/sh
# packaged-toml.sh FILE: prints FILE (contrib/mxdetour.toml, which is
# config.Default() and what "make run" uses: loopback TCP) as the packages
# install it in /etc/mxdetour/mxdetour.toml: the same file but for exactly
# four keys, the sockets the socket units of contrib/systemd make: three
# unix sockets in Postfix's spool (the daemons take their sockets from
# systemd and warn when the configured address differs; "mxdetour-policyd
# wire" wires Postfix for these), and the abstract socket
# @mxdetour-policy of mxdetour-policyd.socket, where the milter (user
# mxdetour, kept out of Postfix's private/) asks policyd to count the
# sendmail command's mail. Fails unless it replaced exactly those four
# lines. The Makefile's "packages" target runs it;
# packaging/packaging_test.go and ci-check.sh check its output.
set -eu
awk '
/^\[/ { section = $0 }
function set(value) {
	if (!sub(/"[^"]*"/, "\"" value "\"")) { bad = 1 }
	n++
}
section == "[policyd]" && /^policy_listen[ \t]*=/ { set("unix:/var/spool/postfix/private/mxdetour-policy") }
section == "[policyd]" && /^socketmap_listen[ \t]*=/ { set("unix:/var/spool/postfix/private/mxdetour-socketmap") }
section == "[milter]" && /^listen[ \t]*=/ { set("unix:/var/spool/postfix/private/mxdetour-milter") }
section == "[milter]" && /^policyd_listen[ \t]*=/ { set("unix:@mxdetour-policy") }
{ print }
END {
	if (n != 4 || bad) {
		print "packaged-toml.sh: replaced " n " listen lines, want policyd.policy_listen, policyd.socketmap_listen, milter.listen and milter.policyd_listen" > "/dev/stderr"
		exit 1
	}
}
' "$1"
