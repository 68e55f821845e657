#!/usr/bin/env bash
# Real-server suite: boots Debian 12 with systemd as PID 1 in systemd-nspawn,
# installs the mxdetour package the admin's way and checks what an admin sees.
# Run as root:  test/realserver/run.sh            (whole suite)
#               test/realserver/run.sh rootfs     (only build/refresh the cached base)
# Env: MXDETOUR_REALSERVER_CACHE (default /var/cache/mxdetour-realserver),
#      MXDETOUR_DEB (a built mxdetour_*.deb; default: `make deb` of this checkout),
#      MXDETOUR_REALSERVER_KEEP=1 (keep the container's root for inspection),
#      MXDETOUR_REALSERVER_TOML (lines appended to mxdetour.toml after the relay),
#      MXDETOUR_REALSERVER_LOAD (messages in the restart test, default 100).
# Each assertion prints PASS or FAIL with its name; the exit status is 1 if
# any failed, 2 if the suite could not run. Needs: mmdebstrap,
# systemd-container, python3-dkim (installed when missing), go.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${MXDETOUR_REALSERVER_CACHE:-/var/cache/mxdetour-realserver}
SUITE=bookworm
MAILNAME=rs.mxlab.zz
PACKAGES=systemd,systemd-sysv,dbus,postfix,python3,iproute2,rsyslog,procps,less,ca-certificates,adduser,apt-utils
# Bump when the way the base is built changes (not only its packages).
BASE_RECIPE=1

# Refusals of our IP, one of each kind the learner's classifier knows (real
# replies from policyd/learn/classify_test.go, where each one's source is
# named), as LABEL|IPVERSION|DSN|STATUS|COMMAND|REPLY. The suite writes them
# as Postfix's smtp(8) logs a delivery, each for a domain of its own
# (PREFIX-LABEL.zz): as user nobody (forged: nothing may be learned) and as
# user postfix (the control: each one is learned).
FORGED_KINDS='a|4|5.7.1|bounced|RCPT TO|554 5.7.1 Service unavailable; Client host [192.0.2.2] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.2
b|4|5.7.1|bounced|MAIL FROM|550 5.7.1 Unfortunately, messages from [192.0.2.2] weren'"'"'t sent. Please contact your Internet service provider since part of their network is on our block list (S3150). You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors.
c|4|5.7.1|bounced|end of DATA|550-5.7.1 [192.0.2.2] Our system has detected that this message is 550-5.7.1 likely suspicious due to the very low reputation of the sending IP 550-5.7.1 address. To best protect our users from spam, the message has been 550-5.7.1 blocked. Please visit 550 5.7.1 https://support.google.com/mail/answer/188131 for more information. a78si25816854pfj.35 - gsmtp
d|4|5.7.0|bounced|end of DATA|550 5.7.0 Blocked - see https://ipcheck.proofpoint.com/?ip=192.0.2.2
e|4|5.7.1|bounced|end of DATA|550 5.7.1 Unfortunately, messages from [185.234.69.116] weren'"'"'t sent. Please contact your Internet service provider since part of their network is on our block list (S3140). You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors. [DM6NAM12FT008.eop-nam12.prod.protection.outlook.com 2023-02-01T02:52:56.703Z 08DB03E3F757F606]
f|4|5.7.708|bounced|MAIL FROM|550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP. For more information please go to http://go.microsoft.com/fwlink/?LinkId=526653 AS(7230) [BM1PR01MB1076.INDPRD01.PROD.OUTLOOK.COM]
g|4|5.0.0|bounced|MAIL FROM|550 OU-001 (SNT004-MC11F3) Unfortunately, messages from 104.130.122.18 weren'"'"'t sent. Please contact your Internet service provider since part of their network is on our block list. You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors.
h|4|5.0.0|bounced|MAIL FROM|550 DY-001 (BAY0-MC1-F3) Unfortunately, messages from 174.143.146.10 weren'"'"'t sent. Please contact your Internet service provider. You can tell them that Hotmail does not relay dynamically-assigned IP ranges. You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors.
i|4|4.7.0|deferred|MAIL FROM|421 4.7.0 [TSS04] Messages from 185.205.69.214 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes
j|4|5.7.1|bounced|RCPT TO|550 5.7.1 Mail from IP 3.93.33.11 was rejected due to listing in Spamhaus SBL. For details please see http://www.spamhaus.org/query/bl?ip=3.93.33.11
k|4|4.0.0|deferred||554-gmx.net (mxgmx116) Nemesis ESMTP Service not available 554-No SMTP service 554-IP address is black listed. 554 For explanation visit https://postmaster.gmx.net/en/error-messages?ip=95.216.180.11&c=bip
l|4|4.0.0|deferred||554 IP=188.40.10.20 - A problem occurred. (Ask your postmaster for help or to contact tosa@rx.t-online.de to clarify.) (BL)
m|4|5.0.0|bounced|end of DATA|550 Service unavailable; Client host [smtp001.thundermail.com] blocked using Barracuda Reputation; http://www.barracudanetworks.com/reputation/?r=1&ip=5.60.96.9
n|4|5.7.1|bounced|RCPT TO|554 5.7.1 Service unavailable; Client host [167.89.94.22] blocked using bl.spamcop.net; Blocked - see https://www.spamcop.net/bl.shtml?167.89.94.22
o|4|5.7.1|bounced|RCPT TO|554 5.7.1 Service unavailable; Client host [203.0.113.5] blocked using dnsbl.sorbs.net
p|4|5.0.0|bounced|RCPT TO|550 Service unavailable; Client Host [192.0.2.4] blocked using Trend Micro RBL+. Please see http://www.mail-abuse.com/cgi-bin/lookup?ip_address=192.0.2.4
q|4|5.7.1|bounced|RCPT TO|550 5.7.1 <x@q.zz>: Recipient address rejected: Mail from <5.60.96.11> was refused due to the sender IP found in ERS-DUL. For details, query the IP reputation on https://servicecentral.trendmicro.com/en-US/ers/.
r|4|5.0.0|bounced|RCPT TO|553 Your IP is BLACKLISTED at UCEPROTECT-LEVEL 1 - See: http://www.uceprotect.net/rblcheck.php?ipr=145.253.228.166
s|4|4.0.0|deferred||554 p3plibsmtp03-07.prod.phx3.secureserver.net CMGW IB103. Connection refused. 52.38.96.198 has a poor reputation on Cloudmark Sender Intelligence (CSI). Please visit http://csi.cloudmark.com/reset-request/?ip=52.38.96.198 to request a delisting.
t|4|4.0.0|deferred||554 imta14.emeryville.ca.mail.comcast.net comcast 192.0.2.2 Comcast block for spam.
u|4|5.0.3|bounced|MAIL FROM|553 5.0.3 flph829 DNSBL:RBL 521< 192.0.2.9 >_is_blocked.For assistance forward this error to abuse_rbl@abuse-att.net
v|4|5.7.1|bounced|MAIL FROM|550 5.7.1 IP 103.152.79.203 blocked by Vade Threat List (OXSUS001_101)
w|4|4.7.0|deferred|end of DATA|421-4.7.0 [174.143.183.26] Our system has detected an unusual amount of 421-4.7.0 unsolicited mail originating from your IP address. To protect our 421-4.7.0 users from spam, mail sent from your IP address has been temporarily 421 4.7.0 rate limited. - gsmtp
x|4|4.7.1|deferred||554 5.7.1 You are not allowed to connect.
y|4|4.0.0|deferred||550 mwinf5c14 ME Adresse IP source bloquee pour incident de spam. Client host blocked for spamming issues. OFR006_102 Ref http://csi.cloudmark.com/reset-request/?ip=192.0.2.17 [102]
z|4|4.0.0|deferred||554-cunitesapr01.asur.com 554 Your access to this mail system has been rejected due to the sending MTA'"'"'s poor reputation. If you believe that this failure is in error, please contact the intended recipient via alternate means.
v6a|6|5.7.1|bounced|end of DATA|550-5.7.1 [2001:981:da0a:1:c8a1:53ff:fe0c:e44c] Our system has detected that 550-5.7.1 this message does not meet IPv6 sending guidelines regarding PTR 550-5.7.1 records and authentication. Please review 550-5.7.1 https://support.google.com/mail/?p=ipv6_authentication_error for more 550 5.7.1 information. z186si39663674wmz.15 - gsmtp
v6b|6|5.7.25|bounced|end of DATA|550-5.7.25 [2001:bc8:1830:1a00::1] The IP address sending this message does not 550-5.7.25 have a PTR record setup. As a policy, Gmail does not accept messages 550-5.7.25 from IPs with missing PTR records. Please visit 550-5.7.25  support.google.com/mail/answer/81126#authentication for more 550 5.7.25 information. s12si10692358edy.381 - gsmtp'
# forged_lines PREFIX QID: DOMAIN<TAB>SYSLOG-TAG<TAB>MESSAGE per kind, as
# Postfix's smtp(8) (or lmtp(8), or the relay transport's smtp) logs a
# delivery; queue ids QID then a number.
forged_lines() {
	local i=0 label v dsn status cmd reply dom ip tag text
	while IFS='|' read -r label v dsn status cmd reply; do
		[ -n "$label" ] || continue
		dom=$1-$label.zz ip=192.0.2.99
		[ "$v" = 6 ] && ip=2001:db8:99::25
		tag='postfix/smtp[4242]'
		case $label in i) tag='postfix/relay/smtp[4243]' ;; r) tag='postfix/lmtp[4244]' ;; esac
		if [ -n "$cmd" ]; then
			text="host mx.$dom[$ip] said: $reply (in reply to $cmd command)"
		else
			text="host mx.$dom[$ip] refused to talk to me: $reply"
		fi
		printf '%s\t%s\t%s%08X: to=<x@%s>, relay=mx.%s[%s]:25, delay=1, delays=0/0/0/1, dsn=%s, status=%s (%s)\n' \
			"$dom" "$tag" "$2" $i "$dom" "$dom" "$ip" "$dsn" "$status" "$text"
		i=$((i + 1))
	done <<<"$FORGED_KINDS"
}

T0=$(date +%s.%N)  # now() below
PHASES=()
phase_start() { PHASE_NAME=$1; PHASE_T=$(date +%s.%N); echo "=== $1"; }
phase_end() {
	local d; d=$(since "$PHASE_T")
	PHASES+=("$(printf '%-28s %7.1f s' "$PHASE_NAME" "$d")")
}
log() { echo "--- $*"; }
# seconds since a time taken with now()
now() { date +%s.%N; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.2f", a - b }'; }
die() { echo "FATAL: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "run as root"

need_host_tools() {
	local missing=()
	command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
	command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
	/usr/bin/python3 -c 'import dkim' 2>/dev/null || missing+=(python3-dkim)
	/usr/bin/python3 -c 'import nacl' 2>/dev/null || missing+=(python3-nacl)   # dkimpy's Ed25519
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing host tools: ${missing[*]}"
		apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null ||
			die "cannot install ${missing[*]}"
	fi
}

# The host's Debian mirrors, read from its apt configuration (deb822 or
# one-line), as one-line entries for $SUITE. Nothing here names a mirror.
host_mirrors() {
	local uris=() f u
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		while read -r u; do uris+=("$u"); done < <(awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' "$f")
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		while read -r u; do uris+=("$u"); done < <(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { print $i; break } }' "$f")
	done
	local main="" sec="" x
	for x in "${uris[@]}"; do
		case $x in
		*debian-security*) [ -n "$sec" ] || sec=$x ;;
		*/debian | */debian/) [ -n "$main" ] || main=${x%/} ;;
		esac
	done
	[ -n "$main" ] || die "no Debian mirror found in the host's apt configuration"
	echo "deb $main $SUITE main"
	echo "deb $main $SUITE-updates main"
	[ -z "$sec" ] || echo "deb ${sec%/} $SUITE-security main"
}

BASE_KEY=$(printf '%s\n' "$SUITE" "$PACKAGES" "$MAILNAME" "$BASE_RECIPE" | sha256sum | cut -c1-16)
BASE=$CACHE/base-$BASE_KEY

build_base() {
	mkdir -p "$CACHE"
	exec 9>"$CACHE/.lock"
	flock 9
	if [ -f "$BASE/.complete" ]; then
		flock -u 9
		log "cached base $BASE"
		return 0
	fi
	mkdir -p "$CACHE"
	rm -rf "$BASE" "$BASE.tmp"
	local mirrors; mirrors=$(host_mirrors) || exit 2
	log "building base $BASE with mmdebstrap (a few minutes)"
	local args=()
	while read -r l; do args+=("$l"); done <<<"$mirrors"
	mmdebstrap --variant=minbase --include="$PACKAGES" \
		--essential-hook='printf "%s\n" "postfix postfix/main_mailer_type select Internet Site" "postfix postfix/mailname string '"$MAILNAME"'" | chroot "$1" debconf-set-selections' \
		--customize-hook='echo '"$MAILNAME"' > "$1/etc/hostname"' \
		--customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
		"$SUITE" "$BASE.tmp" "${args[@]}" >"$CACHE/mmdebstrap.log" 2>&1 ||
		{ tail -30 "$CACHE/mmdebstrap.log"; die "mmdebstrap failed (log $CACHE/mmdebstrap.log)"; }
	touch "$BASE.tmp/.complete"
	mv "$BASE.tmp" "$BASE"
	# Older bases with another key are of no further use.
	find "$CACHE" -maxdepth 1 -name 'base-*' ! -name "base-$BASE_KEY" -exec rm -rf {} +
	flock -u 9
}

need_host_tools
if [ "${1:-}" = rootfs ]; then
	phase_start "rootfs (cached base)"
	build_base
	phase_end
	printf '%s\n' "${PHASES[@]}"
	exit 0
fi

# ---------------------------------------------------------------- results
RESULTS=()
NFAIL=0
pass() { echo "PASS $1"; RESULTS+=("PASS $1"); }
fail() {
	local n=$1; shift
	echo "FAIL $n"
	[ $# -eq 0 ] || printf '%s\n' "$@" | head -60 | sed 's/^/     | /'
	RESULTS+=("FAIL $n")
	NFAIL=$((NFAIL + 1))
}
# check NAME CMD...: PASS when CMD succeeds, else FAIL with its output.
check() {
	local n=$1 out; shift
	if out=$("$@" 2>&1); then pass "$n"; else fail "$n" "$out"; fi
}

# ---------------------------------------------------------------- container
WORK=$CACHE/run-$$
ROOT=$WORK/root
NSPID=
CPID=
inside() { nsenter -t "$CPID" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }
insh() { inside /bin/bash -c "$1"; }
# grep -q in a pipeline ends it early: with pipefail the writer's SIGPIPE
# would fail the pipeline. has reads all its input.
has() { grep "$@" >/dev/null; }
# journal lines since a time taken with now(), inside the container
jsince() { local t=$1; shift; inside journalctl --no-pager -q --since "@${t%.*}" "$@"; }

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$NSPID" ] && kill -0 "$NSPID" 2>/dev/null; then
		phase_start "shutdown"
		[ -z "$CPID" ] || inside systemctl poweroff >/dev/null 2>&1 || true
		for _ in $(seq 1 150); do kill -0 "$NSPID" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$NSPID" 2>/dev/null; then
			log "container did not power off in 15 s; terminating nspawn"
			kill -TERM "$NSPID" 2>/dev/null
			for _ in $(seq 1 100); do kill -0 "$NSPID" 2>/dev/null || break; sleep 0.1; done
			kill -KILL "$NSPID" 2>/dev/null
		fi
		wait "$NSPID" 2>/dev/null
		phase_end
	fi
	if [ "${MXDETOUR_REALSERVER_KEEP:-}" = 1 ]; then
		log "kept $WORK (root, logs, sink messages)"
	elif [ -d "$WORK" ]; then
		rm -rf "$WORK"
	fi
	summary $rc
	[ $rc -ne 0 ] || [ $NFAIL -eq 0 ] || rc=1
	exit $rc
}

summary() {
	echo
	echo "=== results"
	[ ${#RESULTS[@]} -eq 0 ] || printf '%s\n' "${RESULTS[@]}"
	echo "=== timings"
	[ ${#PHASES[@]} -eq 0 ] || printf '%s\n' "${PHASES[@]}"
	printf '%-28s %7.1f s\n' "total" "$(since "$T0")"
	echo "$(( ${#RESULTS[@]} - NFAIL )) passed, $NFAIL failed"
	[ "${1:-0}" -eq 0 ] || [ "${1:-0}" -eq 1 ] || echo "the suite did not finish (exit $1)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- build
# Roots of runs that were killed (their script is gone) are of no use.
for d in "$CACHE"/run-*; do
	[ -d "$d" ] || continue
	p=${d##*/run-}
	kill -0 "$p" 2>/dev/null || rm -rf "$d"
done
# The package (make deb) builds while the base is made or found.
phase_start "build (rootfs, deb, helpers)"
mkdir -p "$WORK/bin" "$WORK/out"
DEB=${MXDETOUR_DEB:-}
DEBPID=
if [ -z "$DEB" ]; then
	log "make deb (in the background)"
	make -C "$REPO" deb >"$WORK/make-deb.log" 2>&1 &
	DEBPID=$!
fi
build_base
for h in fakedns sink smtpload; do
	(cd "$REPO" && CGO_ENABLED=0 go build -trimpath -o "$WORK/bin/rs-$h" "./test/realserver/$h") || die "building $h"
done
if [ -n "$DEBPID" ]; then
	wait $DEBPID || { tail -30 "$WORK/make-deb.log"; die "make deb failed (log above)"; }
	DEB=$(ls -t "$REPO"/dist/mxdetour_*.deb 2>/dev/null | head -1)
fi
[ -f "$DEB" ] || die "no package: $DEB"
log "package $DEB"
phase_end

# ---------------------------------------------------------------- root
phase_start "copy root"
cp -a "$BASE" "$ROOT" || die "cp -a"
rm -f "$ROOT/.complete"
phase_end

phase_start "prepare root"
install -m 0755 "$WORK"/bin/rs-* "$ROOT/usr/local/bin/"
install -m 0755 "$HERE/peer.py" "$ROOT/usr/local/bin/rs-peer"
cp "$DEB" "$ROOT/root/"
DEBNAME=$(basename "$DEB")
mkdir -p "$ROOT/etc/rs"
# The world as DNS tells it: a Google-hosted customer (recognised by the MX
# host name), a plain domain with its own MX, our sending domain (its DKIM
# records are appended after keygen), a domain whose MX refuses our IP
# (127.0.0.12) and one whose MX knows no such user (127.0.0.13), and the
# domains of the forged and the control delivery lines (127.0.0.10). All
# addresses are the container's loopback: 127.0.0.10 the direct sink.
cat >"$ROOT/etc/rs/zone" <<'ZONE'
$TTL 60
customer-a.zz.            IN MX 10 aspmx.l.google.com.
customer-a.zz.            IN TXT "v=spf1 -all"
aspmx.l.google.com.       IN A  127.0.0.10
plain-b.zz.               IN MX 10 mx.plain-b.zz.
mx.plain-b.zz.            IN A  127.0.0.10
sender-c.zz.              IN MX 10 mx.plain-b.zz.
sender-c.zz.              IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.sender-c.zz.       IN TXT "v=DMARC1; p=none"
blocked-d.zz.             IN MX 10 mx.blocked-d.zz.
mx.blocked-d.zz.          IN A  127.0.0.12
unknown-e.zz.             IN MX 10 mx.unknown-e.zz.
mx.unknown-e.zz.          IN A  127.0.0.13
ZONE
for d in $(forged_lines victim 0 | cut -f1) $(forged_lines ctl 0 | cut -f1) victim-jf.zz victim-sc.zz; do
	printf '%s. IN MX 10 mx.%s.\nmx.%s. IN A 127.0.0.10\n' "$d" "$d" "$d"
done >>"$ROOT/etc/rs/zone"
printf 'nameserver 127.0.0.53\noptions timeout:1 attempts:1\n' >"$ROOT/etc/resolv.conf"
unit() { # NAME DESCRIPTION EXEC
	cat >"$ROOT/etc/systemd/system/$1.service" <<UNIT
[Unit]
Description=$2
Before=postfix@-.service
[Service]
ExecStart=$3
Restart=on-failure
[Install]
WantedBy=multi-user.target
UNIT
	ln -sf "/etc/systemd/system/$1.service" "$ROOT/etc/systemd/system/multi-user.target.wants/$1.service"
}
unit rs-fakedns "suite: fake DNS on 127.0.0.53" "/usr/local/bin/rs-fakedns -listen 127.0.0.53:53 -zone /etc/rs/zone"
unit rs-sink-direct "suite: direct MX sink" "/usr/local/bin/rs-sink -listen 127.0.0.10:25 -name mx.sink-direct.zz -dir /var/lib/rs-sink/direct"
unit rs-sink-relay "suite: relay sink (STARTTLS)" "/usr/local/bin/rs-sink -listen 127.0.0.11:587 -tls -name mx03.sink-relay.zz -dir /var/lib/rs-sink/relay"
# What Postfix's own default_rbl_reply says to a listed client, and what a
# mailbox host says of an unknown user. (systemd unquotes the arguments.)
unit rs-sink-blocked "suite: MX that refuses our IP" "/usr/local/bin/rs-sink -listen 127.0.0.12:25 -name mx.blocked-d.zz -dir /var/lib/rs-sink/blocked -rcpt-reply \"554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/127.0.0.1\""
unit rs-sink-unknown "suite: MX that knows no such user" "/usr/local/bin/rs-sink -listen 127.0.0.13:25 -name mx.unknown-e.zz -dir /var/lib/rs-sink/unknown -rcpt-reply \"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table\""
# Postfix on 127.0.0.1 only (the sinks take port 25 on other loopback
# addresses). Deferred mail is retried after 10-60 s instead of 5 min,
# as README ("Which wiring?") suggests where minutes matter: the suite
# measures whether mail is lost, not Postfix's patience.
chroot "$ROOT" postconf -e inet_interfaces=127.0.0.1 inet_protocols=ipv4 "myhostname=$MAILNAME" \
	queue_run_delay=10s minimal_backoff_time=10s maximal_backoff_time=60s || die "postconf"
phase_end

# ---------------------------------------------------------------- boot
phase_start "boot"
systemd-nspawn -b -D "$ROOT" --private-network --register=no --keep-unit --console=read-only \
	--machine=mxrs --resolv-conf=off --timezone=off >"$WORK/boot.log" 2>&1 </dev/null &
NSPID=$!
for _ in $(seq 1 300); do
	for p in $(pgrep -P "$NSPID") $(pgrep -P "$(pgrep -P "$NSPID" | tr '\n' ',' | sed 's/,$//')" 2>/dev/null); do
		[ "$(cat /proc/"$p"/comm 2>/dev/null)" = systemd ] && CPID=$p && break 2
	done
	kill -0 "$NSPID" 2>/dev/null || { cat "$WORK/boot.log"; die "nspawn exited"; }
	sleep 0.1
done
[ -n "$CPID" ] || { cat "$WORK/boot.log"; die "no systemd in the container"; }
state=
for _ in $(seq 1 120); do
	state=$(inside systemctl is-system-running 2>/dev/null)
	case $state in running | degraded) break ;; esac
	sleep 0.5
done
log "container systemd PID $CPID: $state"
case $state in
running) ;;
degraded) inside systemctl --failed --no-legend --no-pager ;;
*) tail -20 "$WORK/boot.log"; die "container not up: $state" ;;
esac
phase_end

# ---------------------------------------------------------------- set-up, the admin's way
phase_start "install and wire"
TOML=/etc/mxdetour/mxdetour.toml
RELAY='relay:[127.0.0.11]:587'
GOOGLE=someone@customer-a.zz
PLAIN=someone@plain-b.zz
FROM=alice@sender-c.zz
check "install: apt install ./$DEBNAME" insh "cd /root && apt install -y ./$DEBNAME"
# README step 2: the relay, the one key to set.
insh "sed -i 's|^relay = \"\".*|relay = \"$RELAY\"|' $TOML && grep -qxF 'relay = \"$RELAY\"' $TOML" || fail "config: set the relay in $TOML"
if [ -n "${MXDETOUR_REALSERVER_TOML:-}" ]; then
	log "appending MXDETOUR_REALSERVER_TOML to $TOML"
	printf '%s\n' "$MXDETOUR_REALSERVER_TOML" | inside tee -a "$TOML" >/dev/null
fi
# README "DKIM": a key of each kind for our sending domain, records published.
for k in rsa:rsa2026 ed25519:ed2026; do
	if out=$(inside mxdetour-milter keygen -domain sender-c.zz -selector "${k#*:}" -algorithm "${k%%:*}" -dir /etc/mxdetour/dkim 2>&1); then
		printf '%s\n' "$out" >>"$ROOT/etc/rs/zone"
		# keygen prints the row for mxdetour.toml as comments ("; ...")
		printf '\n%s\n' "$(printf '%s\n' "$out" | sed -n '/^; \[\[milter.dkim.keys\]\]/,/^; key_file/p' | sed 's/^; //')" | inside tee -a "$TOML" >/dev/null
		pass "dkim: keygen ${k%%:*}"
	else
		fail "dkim: keygen ${k%%:*}" "$out"
	fi
done
# Issue "only Postfix can teach or spend": a deferral by a block is
# delivered again at once, and a limit on logins that a local user must not
# be able to spend (wire adds the limits policy service for it). The
# suite's own mail (from alice@sender-c.zz over SMTP from 127.0.0.1, or by
# root's sendmail) is exempt: it has no login, and 100 messages go out below.
insh "sed -i 's/^requeue = false/requeue = true/' $TOML && grep -q '^requeue = true' $TOML" ||
	fail "config: [learn] requeue = true in $TOML" "$(inside grep -n requeue $TOML)"
cat <<'TOML' | inside tee -a "$TOML" >/dev/null

[[limits]]
key = "sasl_username"
max = 3
window = "1h"
# A sasl_username limit counts every account: the login, else the local
# account of sendmail's mail, else a trusted client's sender. The web
# script phase's accounts are exempt here so that they meet their own
# limit below, not this one.
exempt = ["sender:alice@sender-c.zz", "local_user:root", "local_user:webapp", "local_user:webapp2"]

# Issue "catch the abused web script": mail from the sendmail command,
# counted by the local account that ran it (root's is the suite's own).
[[limits]]
key = "local_user"
max = 20
window = "1h"
exempt = ["local_user:root"]
TOML
check "config: mxdetour-policyd -check-config" inside mxdetour-policyd -check-config
# README step 3: start the daemons.
check "units: systemctl enable --now" inside systemctl enable --now mxdetour-policyd.socket mxdetour-policyd-socketmap.socket \
	mxdetour-milter.socket mxdetour-policyd mxdetour-milter
check "units: all five active" inside systemctl is-active mxdetour-policyd.socket mxdetour-policyd-socketmap.socket \
	mxdetour-milter.socket mxdetour-policyd mxdetour-milter
# README step 4: wire Postfix.
inside cp -p /etc/postfix/main.cf /etc/postfix/master.cf /root/
TWIRE=$(now)
WIRED_BY=wire
if out=$(inside mxdetour-policyd wire 2>&1); then
	pass "wire: mxdetour-policyd wire"
	printf '%s\n' "$out" | sed 's/^/     | /'
	out=$(inside mxdetour-policyd wire 2>&1)
	printf '%s\n' "$out" | has 'nothing to change' && pass "wire: a second run changes nothing" ||
		fail "wire: a second run changes nothing" "$out"
	# "fill it in and postmap it": the relay sink wants no login, so the
	# table stays as wire made it; an admin would postmap it all the same.
	insh '[ ! -f /etc/postfix/sasl_passwd ] || [ -f /etc/postfix/sasl_passwd.db ] || postmap /etc/postfix/sasl_passwd'
else
	fail "wire: mxdetour-policyd wire" "$out" "(continuing with contrib/postfix's wiring done by hand with postconf)"
	WIRED_BY=hand
	# contrib/postfix, wiring A, without a static transport table (we have
	# none) and the relay without SASL (the relay sink asks for none).
	insh '
	set -e
	postconf -e "transport_maps = socketmap:inet:127.0.0.1:10041:transport" \
		"smtpd_milters = inet:127.0.0.1:10042" "non_smtpd_milters = inet:127.0.0.1:10042" \
		milter_default_action=accept milter_protocol=6 milter_connect_timeout=5s \
		milter_command_timeout=5s milter_content_timeout=30s
	postconf -M "rewrite-smtpd/unix=rewrite-smtpd unix - - y - - trivial-rewrite"
	postconf -P "rewrite-smtpd/unix/transport_maps="
	postconf -P "smtp/inet/rewrite_service_name=rewrite-smtpd"
	postconf -M "relay/unix=relay unix - - y - - smtp"
	postconf -P "relay/unix/syslog_name=postfix/\$service_name" "relay/unix/smtp_tls_security_level=encrypt"
	postfix reload
	' || fail "wire by hand (suite's fallback)"
fi
# The socketmap Postfix now asks, as postmap -q can use it (a unix socket
# named relative to Postfix's queue directory gets its full path).
SOCKETMAP=$(inside postconf -xh transport_maps | tr ', ' '\n\n' | grep '^socketmap:' | head -1)
case $SOCKETMAP in
socketmap:unix:/*) ;;
socketmap:unix:*) SOCKETMAP=socketmap:unix:$(inside postconf -xh queue_directory)/${SOCKETMAP#socketmap:unix:} ;;
"") SOCKETMAP=socketmap:inet:127.0.0.1:10041:transport
	fail "wire: transport_maps has a socketmap" "transport_maps = $(inside postconf -xh transport_maps)" ;;
esac
log "socketmap: $SOCKETMAP"
out=$(inside postfix check 2>&1)
if [ -z "$out" ]; then pass "postfix: postfix check prints nothing"; else fail "postfix: postfix check prints nothing" "$out"; fi
phase_end

# ---------------------------------------------------------------- routing and DKIM
# In the sinks' directories (seen from the host), the .eml files whose
# Subject is exactly $2.
sink_find() { grep -lP "^Subject: \\Q$2\\E\r?\$" "$ROOT/var/lib/rs-sink/$1"/*.eml 2>/dev/null; }
wait_for() { # SECONDS CMD...: until CMD succeeds
	local end=$(($(date +%s) + $1)); shift
	until "$@"; do [ "$(date +%s)" -lt $end ] || return 1; sleep 0.5; done
}

phase_start "routing and DKIM"
TROUTE=$(now)
out=$(inside timeout 5 postmap -q "$GOOGLE" $SOCKETMAP 2>&1)
[ "$out" = "$RELAY" ] && pass "socketmap: Google-hosted recipient -> $RELAY" || fail "socketmap: Google-hosted recipient -> $RELAY" "postmap -q $GOOGLE: $out"
inside rs-smtpload -n 2 -interval 100ms -from $FROM -rcpt "$GOOGLE,$PLAIN" -prefix rs-route-smtp >"$WORK/out/route-smtp.txt" 2>&1 ||
	fail "routing: SMTP submission accepted" "$(cat "$WORK/out/route-smtp.txt")"
for r in google:$GOOGLE plain:$PLAIN; do
	printf 'From: <%s>\nTo: <%s>\nSubject: rs-route-sendmail-%s\nMessage-ID: <rs-route-sendmail-%s@rs.zz>\n\nrouting test via sendmail\n' \
		$FROM "${r#*:}" "${r%%:*}" "${r%%:*}" | inside sendmail -f $FROM "${r#*:}"
done
route_ok=1
for m in relay:rs-route-smtp-0 direct:rs-route-smtp-1 relay:rs-route-sendmail-google direct:rs-route-sendmail-plain; do
	sink=${m%%:*} subj=${m#*:}
	if wait_for 40 sink_find "$sink" "$subj" >/dev/null; then
		f=$(sink_find "$sink" "$subj" | head -1)
		cp "$f" "$WORK/out/$subj.eml"
		if [ "$sink" = relay ] && ! has -F '"tls":true' "${f%.eml}.env"; then
			fail "routing: $subj at the $sink sink, over TLS" "$(cat "${f%.eml}.env")"
		else
			pass "routing: $subj at the $sink sink$([ "$sink" = relay ] && echo ", over TLS")"
		fi
	else
		route_ok=0
		other=relay; [ "$sink" = relay ] && other=direct
		where=$(sink_find $other "$subj" >/dev/null && echo "it arrived at the $other sink" || echo "it arrived nowhere in 40 s")
		fail "routing: $subj at the $sink sink" "$where" "$(insh "grep -h 'rs-route\|to=<someone' /var/log/mail.log | tail -20; postqueue -p | tail -20")"
		f=$(sink_find $other "$subj" | head -1)
		[ -z "$f" ] || cp "$f" "$WORK/out/$subj.eml"
	fi
done
msgs=("$WORK"/out/rs-route-*.eml)
if [ -e "${msgs[0]}" ]; then
	cp "$ROOT/etc/rs/zone" "$WORK/out/zone"
	check "dkim: signatures verify with dkimpy (${#msgs[@]} messages)" /usr/bin/python3 "$HERE/dkimverify.py" "$WORK/out/zone" "${msgs[@]}"
	out=$(/usr/bin/python3 "$HERE/dkimverify.py" "$WORK/out/zone" "${msgs[@]}" 2>&1)
	for a in rsa-sha256 ed25519-sha256; do
		n=$(printf '%s\n' "$out" | grep -c "^OK .*a=$a")
		[ "$n" -ge ${#msgs[@]} ] && pass "dkim: every message has a good $a signature" ||
			fail "dkim: every message has a good $a signature" "$out"
	done
else
	fail "dkim: signatures verify with dkimpy" "no message arrived"
fi
sleep 1
out=$(jsince "$TWIRE" | grep -E 'postfix(/[a-z-]+)?\[[0-9]+\]: (warning|error|fatal|panic):')
[ -z "$out" ] && pass "postfix: no warning in the journal since wiring ($WIRED_BY)" || fail "postfix: no warning in the journal since wiring ($WIRED_BY)" "$out"
phase_end

# ---------------------------------------------------------------- only Postfix teaches or spends
# Issue "only Postfix can teach or spend": what a local user can do to
# mxdetour, tried as the attacker would (nobody, and mallory in group
# postfix), beside what Postfix itself does (a receiver that refuses our IP).
phase_start "only Postfix teaches or spends"
T=$(now)
# Postfix's own block first: its message comes back through the relay only
# after a while (requeue), so the attacker's tries run meanwhile.
TSENT=$(now)
for r in blocked-d unknown-e; do
	printf 'From: <%s>\nTo: <someone@%s.zz>\nSubject: rs-%s\nMessage-ID: <rs-%s@rs.zz>\n\nto a receiver that refuses us\n' \
		$FROM $r $r $r | inside sendmail -f $FROM someone@$r.zz
done

# Where policyd learns from: the journal, by Postfix's uid.
src=$(inside journalctl --no-pager -q -u mxdetour-policyd -o cat | grep -oE "learning from (the journal|the log file|a log file|Postfix's).*" | tail -1)
case $src in
"learning from the journal:"*) pass "learn: policyd says it learns from the journal (learn.source = auto)" ;;
*) fail "learn: policyd says it learns from the journal (learn.source = auto)" "its journal says: ${src:-nothing about its source}" ;;
esac
# A diagnosis for when nothing is learned: journalctl --follow reads only
# the current boot (systemd >= 250: -f implies -b), the one
# /proc/sys/kernel/random/boot_id names. In a container that file is the
# container's own, mounted over the kernel's; a service whose sandbox
# mounts a fresh /proc (ProtectProc=, ProtectKernelTunables=,
# ProtectControlGroups=) sees the kernel's, and its journalctl --follow
# then matches no record at all.
jdiag="policyd's journalctl: none of user mxdetour runs"
jpid=$(inside pgrep -u mxdetour -x journalctl | head -1)
if [ -n "$jpid" ]; then
	b_sys=$(inside cat /proc/sys/kernel/random/boot_id)
	b_svc=$(inside nsenter -t "$jpid" -m cat /proc/sys/kernel/random/boot_id)
	jdiag="policyd's journalctl ($(inside cat /proc/"$jpid"/cmdline | tr '\0' ' ')) sees boot id $b_svc, the system $b_sys"
	[ "$b_sys" = "$b_svc" ] || jdiag="$jdiag: journalctl --follow implies --boot (systemd >= 250), so it follows a boot the journal has no record of ($(inside systemctl show -p ProtectProc -p ProtectKernelTunables -p ProtectControlGroups mxdetour-policyd | tr '\n' ' '))"
fi
log "$jdiag"

# 1. Forged delivery lines. As nobody: through syslog (logger, as rsyslog
# writes them to mail.log like Postfix's own), through the journal's native
# protocol naming Postfix's uid in a trusted field (_UID=, which journald
# must drop), and through a stream (systemd-cat). Then the same syslog lines
# as user postfix, for other domains: the control, each must be learned.
forged_lines victim 3F >"$ROOT/etc/rs/forged-nobody.tsv"
forged_lines ctl 5C >"$ROOT/etc/rs/forged-postfix.tsv"
NKINDS=$(grep -c . "$ROOT/etc/rs/forged-nobody.tsv")
PFUID=$(inside id -u postfix)
zen='554 5.7.1 Service unavailable; Client host [192.0.2.2] blocked using zen.spamhaus.org'
printf '%s\n' "MESSAGE=3F0000F001: to=<x@victim-jf.zz>, relay=mx.victim-jf.zz[192.0.2.99]:25, delay=1, delays=0/0/0/1, dsn=5.7.1, status=bounced (host mx.victim-jf.zz[192.0.2.99] said: $zen (in reply to RCPT TO command))" \
	SYSLOG_IDENTIFIER=postfix/smtp SYSLOG_PID=4242 SYSLOG_FACILITY=2 PRIORITY=6 "_UID=$PFUID" "_GID=$PFUID" _COMM=smtp "_SYSTEMD_UNIT=postfix@-.service" \
	>"$ROOT/etc/rs/forged-journald.txt"
printf '%s\n' "3F0000F002: to=<x@victim-sc.zz>, relay=mx.victim-sc.zz[192.0.2.99]:25, delay=1, delays=0/0/0/1, dsn=5.7.1, status=bounced (host mx.victim-sc.zz[192.0.2.99] said: $zen (in reply to RCPT TO command))" \
	>"$ROOT/etc/rs/forged-stream.txt"
TFORGE=$(now)
out=$(insh 'set -u
while IFS=$'"'"'\t'"'"' read -r dom tag msg; do
	runuser -u nobody -- logger -p mail.info -t "$tag" -- "$msg" || echo "logger failed for $dom"
done </etc/rs/forged-nobody.tsv
runuser -u nobody -- logger --journald=/etc/rs/forged-journald.txt || echo "logger --journald failed"
runuser -u nobody -- systemd-cat -t postfix/smtp -p info cat /etc/rs/forged-stream.txt || echo "systemd-cat failed"' 2>&1)
[ -z "$out" ] || log "forging as nobody: $out"
TCTL=$(now)
out=$(insh 'while IFS=$'"'"'\t'"'"' read -r dom tag msg; do
	runuser -u postfix -- logger -p mail.info -t "$tag" -- "$msg" || echo "logger failed for $dom"
done </etc/rs/forged-postfix.tsv' 2>&1)
[ -z "$out" ] || log "logging as postfix: $out"
learned_of() { inside mxdetour-policyd blocks | grep -E "^$1-[a-z0-9]+\.zz[[:space:]]" | cut -f1; }
all_ctl() { [ "$(learned_of ctl | grep -c .)" -eq "$NKINDS" ]; }
wait_for 15 all_ctl
tctl=$(since "$TCTL")
nctl=$(learned_of ctl | grep -c .)
# At least 3 s for the forged lines, which came first.
sleep "$(awk -v a="$(since "$TFORGE")" 'BEGIN { d = 3 - a; print (d > 0 ? d : 0) }')"
victims=$(learned_of victim)
nvictim=$(printf '%s\n' "$victims" | grep -c .)
[ "$nctl" -eq "$NKINDS" ] && pass "forged lines: control: the $NKINDS lines logged as user postfix are all learned (${tctl} s)" ||
	fail "forged lines: control: the $NKINDS lines logged as user postfix are all learned" "$nctl of $NKINDS in ${tctl} s; missing:" \
		"$(comm -23 <(cut -f1 "$ROOT/etc/rs/forged-postfix.tsv" | sort) <(learned_of ctl | sort) | tr '\n' ' ')" \
		"$(jsince "$TCTL" -u mxdetour-policyd | grep -v decision | tail -8)" "$jdiag"
if [ "$nctl" -eq 0 ]; then
	fail "forged lines: 0 of $((NKINDS + 2)) forged by nobody learned" "inconclusive: the control learned nothing either, so policyd learns nothing at all"
else
	[ "$nvictim" -eq 0 ] && pass "forged lines: 0 of $((NKINDS + 2)) forged by nobody learned ($NKINDS block kinds by logger, _UID= by logger --journald, systemd-cat; $(since "$TFORGE") s)" ||
		fail "forged lines: 0 of $((NKINDS + 2)) forged by nobody learned" "$nvictim learned: $(echo $victims)" \
			"$(inside mxdetour-policyd blocks | grep -A1 '^victim-' | head -12)"
fi
# The forgeries did land where a reader of mail.log or of the journal would
# take them for Postfix's, so nothing above passed for want of trying.
nmaillog=$(insh "grep -c 'to=<x@victim-' /var/log/mail.log")
njournal=$(jsince "$TFORGE" _UID=65534 -o cat | grep -c 'to=<x@victim-')
nfake=$(jsince "$TFORGE" _UID="$PFUID" -o cat | grep -c 'to=<x@victim-')
[ "$nmaillog" -ge "$NKINDS" ] && [ "$njournal" -eq $((NKINDS + 2)) ] && [ "$nfake" -eq 0 ] &&
	pass "forged lines: all in mail.log ($nmaillog) and in the journal under nobody's _UID ($njournal), none under postfix's" ||
	fail "forged lines: all in mail.log and in the journal under nobody's _UID, none under postfix's" \
		"mail.log: $nmaillog (want >= $NKINDS); journal _UID=65534: $njournal (want $((NKINDS + 2))); _UID=$PFUID: $nfake (want 0)" \
		"$(jsince "$TFORGE" -o verbose --output-fields=_UID,SYSLOG_IDENTIFIER,MESSAGE | grep -B3 'victim-jf' | head -12)"
# Their domains still go direct, by the running daemon and by `check`;
# the control's go through the relay.
vdoms=$(cut -f1 "$ROOT/etc/rs/forged-nobody.tsv"; echo victim-jf.zz victim-sc.zz | tr ' ' '\n')
routes_of() { # DOMAINS...: "DOMAIN ROUTE" by mxdetour-policyd check -json
	inside mxdetour-policyd check -json $(printf 'x@%s ' "$@") 2>&1 |
		python3 -c 'import json, sys; [print(r["domain"], r["route"]) for r in json.load(sys.stdin)]' 2>&1
}
out=$(routes_of $vdoms)
bad=$(printf '%s\n' "$out" | grep -v ' direct$')
[ -z "$bad" ] && [ "$(printf '%s\n' "$out" | grep -c ' direct$')" -eq $((NKINDS + 2)) ] &&
	pass "forged lines: mxdetour-policyd check: all $((NKINDS + 2)) domains route direct" ||
	fail "forged lines: mxdetour-policyd check: all $((NKINDS + 2)) domains route direct" "$out"
out=$(insh "for d in $(echo $vdoms); do printf '%s %s\n' \$d \"\$(timeout 5 postmap -q x@\$d $SOCKETMAP)\"; done")
bad=$(printf '%s\n' "$out" | grep -v ' $')
[ -z "$bad" ] && pass "forged lines: the socketmap answers NOTFOUND (direct) for all $((NKINDS + 2))" ||
	fail "forged lines: the socketmap answers NOTFOUND (direct) for all $((NKINDS + 2))" "$bad"
out=$(routes_of $(cut -f1 "$ROOT/etc/rs/forged-postfix.tsv"))
[ "$(printf '%s\n' "$out" | grep -c ' relay$')" -eq "$NKINDS" ] &&
	pass "forged lines: control: mxdetour-policyd check routes all $NKINDS via the relay" ||
	fail "forged lines: control: mxdetour-policyd check routes all $NKINDS via the relay" "$(printf '%s\n' "$out" | grep -v ' relay$')"

# 2. The sockets. nobody: neither private/ (Postfix's, 0700) nor the
# sockets (postfix:postfix 0660) let it in. mallory, in group postfix,
# reaches them through a door (hard links outside private/: a socket put
# where the file mode is all that guards it): the kernel connects it, the
# daemon's peer-credential check must close it unanswered.
inside useradd -M -N -G postfix -s /usr/sbin/nologin mallory || fail "sockets: useradd mallory"
MUID=$(inside id -u mallory)
PRIV=/var/spool/postfix/private
DOOR=/var/spool/rs-door
insh "mkdir -p $DOOR && chmod 0755 $DOOR && for s in policy socketmap milter; do ln -f $PRIV/mxdetour-\$s $DOOR/mxdetour-\$s || exit 1; done" ||
	fail "sockets: hard links to the sockets in $DOOR" "$(insh "ls -la $PRIV $DOOR")"
TPEER=$(now)
tries() { # USER DIR: each socket, a few times; one line per attempt
	inside runuser -u "$1" -- rs-peer socketmap "$2/mxdetour-socketmap" 3 | sed 's/^/socketmap /'
	inside runuser -u "$1" -- rs-peer policy "$2/mxdetour-policy" alice 5 "rs-$1" | sed 's/^/policy /'
	inside runuser -u "$1" -- rs-peer milter "$2/mxdetour-milter" 3 | sed 's/^/milter /'
}
for u in nobody mallory; do
	for where in $PRIV $DOOR; do
		out=$(tries $u $where 2>&1)
		n=$(printf '%s\n' "$out" | grep -c .)
		acc=$(printf '%s\n' "$out" | grep -Ec '^[a-z]+ (answer|timeout)')
		if [ "$u" = mallory ] && [ "$where" = $DOOR ]; then
			# The file mode lets mallory connect: the daemon must close.
			closed=$(printf '%s\n' "$out" | grep -Ec '^[a-z]+ closed$')
			[ "$n" -eq 11 ] && [ "$closed" -eq 11 ] &&
				pass "sockets: mallory (group postfix) through $DOOR: each of 11 connections closed unanswered by the peer check" ||
				fail "sockets: mallory (group postfix) through $DOOR: each of 11 connections closed unanswered by the peer check" "$out"
		else
			refused=$(printf '%s\n' "$out" | grep -Ec '^[a-z]+ connect-failed EACCES$')
			[ "$n" -eq 11 ] && [ "$refused" -eq 11 ] &&
				pass "sockets: $u through $where: 0 of 11 connections (the kernel refuses: EACCES)" ||
				fail "sockets: $u through $where: 0 of 11 connections (the kernel refuses: EACCES)" "$acc accepted of $n:" "$out"
		fi
	done
done
# Control: Postfix's user is answered on each socket.
out=$( (inside runuser -u postfix -- rs-peer socketmap $PRIV/mxdetour-socketmap 1 | sed 's/^/socketmap /'
	inside runuser -u postfix -- rs-peer milter $PRIV/mxdetour-milter 1 | sed 's/^/milter /') 2>&1)
printf '%s\n' "$out" | has -x 'socketmap answer OK relay:\[127.0.0.11\]:587\|socketmap answer NOTFOUND.*' &&
	printf '%s\n' "$out" | has "^milter answer milter command 'O'" &&
	pass "sockets: control: postfix is answered on the socketmap and the milter" ||
	fail "sockets: control: postfix is answered on the socketmap and the milter" "$out"
# One warning per listener for mallory's 3 (or 5) refused connections.
sleep 0.5
pw=$(jsince "$TPEER" -u mxdetour-policyd -o cat | grep 'refused a connection')
mw=$(jsince "$TPEER" -u mxdetour-milter -o cat | grep 'refused a connection')
np=$(printf '%s\n' "$pw" | grep 'socket=policy ' | grep -c "uid=$MUID user=mallory")
ns=$(printf '%s\n' "$pw" | grep 'socket=socketmap ' | grep -c "uid=$MUID user=mallory")
nm=$(printf '%s\n' "$mw" | grep -c "uid=$MUID user=mallory")
other=$(printf '%s\n' "$pw" "$mw" | grep . | grep -vc "uid=$MUID user=mallory")
[ "$np" -eq 1 ] && [ "$ns" -eq 1 ] && [ "$nm" -eq 1 ] && [ "$other" -eq 0 ] &&
	pass "sockets: one refused-peer warning per socket for mallory (policy, socketmap, milter)" ||
	fail "sockets: one refused-peer warning per socket for mallory (policy, socketmap, milter)" \
		"policy: $np, socketmap: $ns, milter: $nm, of other users: $other" "$pw" "$mw"
insh "rm -rf $DOOR"

# 3. alice's allowance: 10 requests for sasl_username=alice were tried
# above, by nobody and mallory. Nothing is held, and her count is still 0:
# Postfix's own requests for her are the 1st, 2nd and 3rd, and the 4th is
# the first over max = 3.
out=$(inside mxdetour-policyd holds -json 2>&1)
nkeys=$(printf '%s\n' "$out" | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["keys"] or []))' 2>&1)
[ "$nkeys" = 0 ] && pass "limits: mxdetour-policyd holds -json: nothing held" || fail "limits: mxdetour-policyd holds -json: nothing held" "$out"
out=$(inside runuser -u postfix -- rs-peer policy $PRIV/mxdetour-policy alice 4 rs-postfix 2>&1)
if [ "$(printf '%s\n' "$out" | head -3 | grep -c '^answer action=DUNNO$')" = 3 ] &&
	printf '%s\n' "$out" | sed -n 4p | has -F 'answer action=HOLD mxdetour: sasl_username limit exceeded (4/3 in 1h)'; then
	pass "limits: alice's count untouched (Postfix's requests for her: 3 DUNNO, the 4th HOLD 4/3)"
else
	fail "limits: alice's count untouched (Postfix's requests for her: 3 DUNNO, the 4th HOLD 4/3)" "$out"
fi
inside mxdetour-policyd holds release sasl_username:alice >/dev/null 2>&1 || log "holds release sasl_username:alice failed"

# 4. Postfix's own block: learned from the journal, the 554 deferred (by
# the delivery status filter wire set up), the message sent again through
# the relay; a user unknown still bounces.
learned_d() { inside mxdetour-policyd blocks | has '^blocked-d\.zz[[:space:]]'; }
if wait_for 10 learned_d; then
	tl=$(jsince "$T" -u mxdetour-policyd -o short-unix | grep -F 'learned: blocked-d.zz' | head -1 | cut -d' ' -f1)
	td=$(jsince "$T" -o short-unix | grep -F 'to=<someone@blocked-d.zz>' | grep 'status=deferred' | head -1 | cut -d' ' -f1)
	lag=$(awk -v a="$tl" -v b="$td" 'BEGIN { if (a == "" || b == "") print "?"; else printf "%.2f", a - b }')
	case $lag in
	'?') fail "learn: Postfix's block of blocked-d.zz learned within 1 s of its deferral" "learned at ${tl:-?}, deferred at ${td:-?}" ;;
	*) awk -v l="$lag" 'BEGIN { exit !(l <= 1.0) }' && pass "learn: Postfix's block of blocked-d.zz learned within 1 s of its deferral (${lag} s)" ||
		fail "learn: Postfix's block of blocked-d.zz learned within 1 s of its deferral" "${lag} s" ;;
	esac
else
	fail "learn: Postfix's block of blocked-d.zz learned" "$(inside mxdetour-policyd blocks)" \
		"$(jsince "$T" | grep -F 'blocked-d.zz' | tail -6)" "$jdiag"
fi
# Postfix's own delivery line: policyd's may quote it (learn: line="...").
QD=$(jsince "$T" | grep -E 'postfix[^ ]*/smtp\[[0-9]+\]: [0-9A-Za-z]+: to=<someone@blocked-d\.zz>' | head -1 | sed -nE 's/.*\]: ([0-9A-Za-z]+): to=<.*/\1/p')
out=$(jsince "$T" | grep -F 'to=<someone@blocked-d.zz>')
printf '%s\n' "$out" | has 'dsn=4\.7\.1, status=deferred' && ! printf '%s\n' "$out" | has 'status=bounced' &&
	pass "block: the 554 came back as status=deferred dsn=4.7.1, never bounced" ||
	fail "block: the 554 came back as status=deferred dsn=4.7.1, never bounced" "$out"
relayed() { sink_find relay rs-blocked-d >/dev/null; }
if wait_for $((60 - $(printf '%.0f' "$(since "$TSENT")"))) relayed; then
	f=$(sink_find relay rs-blocked-d | head -1)
	pass "block: the deferred message reached the relay sink ($(awk -v a="$(date -r "${f%.eml}.env" +%s.%N)" -v b="$TSENT" 'BEGIN { printf "%.1f", a - b }') s after sendmail)"
else
	fail "block: the deferred message reached the relay sink within 60 s" "$(jsince "$T" | grep -E "${QD:-blocked-d}|blocked-d" | grep -v decision | tail -10)" \
		"$(inside postqueue -p | tail -6)"
fi
how=$(jsince "$T" -u mxdetour-policyd -o cat | grep -F "asked Postfix to deliver" | grep -F "${QD:-none}" | head -1)
log "blocked-d.zz: queue id ${QD:-?}; $([ -n "$how" ] && echo "requeued by policyd" || echo "not requeued by policyd (Postfix's own retry)")"
ndn=$(grep -l 'rs-blocked-d@rs.zz' "$ROOT"/var/lib/rs-sink/direct/*.eml 2>/dev/null)
nlog=$(jsince "$T" | grep -F "${QD:-none}: sender non-delivery notification")
[ -z "$ndn" ] && [ -z "$nlog" ] && [ -n "$QD" ] && pass "block: the sender got no bounce" ||
	fail "block: the sender got no bounce" "queue id: ${QD:-not found}" "$nlog" "$ndn"
out=$(jsince "$T" | grep -F 'to=<someone@unknown-e.zz>')
printf '%s\n' "$out" | has 'dsn=5\.1\.1, status=bounced' && pass "block: a 550 5.1.1 user unknown still bounces" ||
	fail "block: a 550 5.1.1 user unknown still bounces" "$out"
ndn_e() { grep -l 'rs-unknown-e@rs.zz' "$ROOT"/var/lib/rs-sink/direct/*.eml >/dev/null 2>&1; }
wait_for 10 ndn_e && pass "block: its sender got the bounce" || fail "block: its sender got the bounce" "$(jsince "$T" | grep -F 'non-delivery' | tail -4)"
phase_end

# ---------------------------------------------------------------- the abused web script
# Issue "catch the abused web script": a local account (a customer's PHP
# mail(), which runs the sendmail command) sends 50 messages against a
# limit of 20 an hour: 20 leave, 30 are on hold in Postfix's own hold
# queue, policyd names the account, and `holds release` delivers the 30.
# A second local account is not affected.
phase_start "the abused web script"
T=$(now)
inside useradd -M -N -s /usr/sbin/nologin webapp || fail "web script: useradd webapp"
inside useradd -M -N -s /usr/sbin/nologin webapp2 || fail "web script: useradd webapp2"
for i in $(seq 1 50); do
	printf 'Subject: rs-web-%s\n\nfrom a web script\n' "$i" | inside runuser -u webapp -- /usr/sbin/sendmail "web$i@plain-b.zz"
done
for i in 1 2; do
	printf 'Subject: rs-web2-%s\n\nfrom another account\n' "$i" | inside runuser -u webapp2 -- /usr/sbin/sendmail "other$i@plain-b.zz"
done
# web_sent PREFIX: how many messages with Subject PREFIX-N reached the direct sink
web_sent() { grep -lP "^Subject: $1-\\d+\r?\$" "$ROOT"/var/lib/rs-sink/direct/*.eml 2>/dev/null | wc -l; }
# web_held: how many of webapp's messages are in the hold queue
web_held() {
	inside postqueue -j | python3 -c 'import json, sys
print(sum(1 for l in sys.stdin if l.strip() and json.loads(l)["queue_name"] == "hold"
          and any(r["address"].startswith("web") for r in json.loads(l)["recipients"])))'
}
settled() { [ "$(web_sent rs-web)" -ge 20 ] && [ "$(web_held)" -ge 30 ] && [ "$(web_sent rs-web2)" -ge 2 ]; }
wait_for 90 settled
sleep 2 # anything more that was going to leave has left
nsent=$(web_sent rs-web) nheld=$(web_held) nother=$(web_sent rs-web2)
[ "$nsent" = 20 ] && [ "$nheld" = 30 ] &&
	pass "web script: 50 messages from webapp's sendmail against 20/h: 20 delivered, 30 on hold (postqueue)" ||
	fail "web script: 50 messages from webapp's sendmail against 20/h: 20 delivered, 30 on hold (postqueue)" \
		"delivered $nsent, held $nheld" "$(jsince "$T" | grep -E 'mxdetour|hold|milter' | grep -v decision | tail -12)"
[ "$nother" = 2 ] && pass "web script: webapp2's 2 messages delivered, not held" ||
	fail "web script: webapp2's 2 messages delivered, not held" "delivered $nother"
out=$(jsince "$T" -u mxdetour-policyd -o cat | grep -F 'alert:' | grep -F 'webapp')
n=$(printf '%s\n' "$out" | grep -c .)
[ "$n" = 1 ] && printf '%s\n' "$out" | has -F 'local_user' &&
	pass "web script: one alert naming local_user webapp" || fail "web script: one alert naming local_user webapp" "$n alert lines:" "$out"
out=$(inside mxdetour-policyd holds 2>&1)
printf '%s\n' "$out" | has 'webapp' && ! printf '%s\n' "$out" | has 'webapp2' &&
	pass "web script: mxdetour-policyd holds lists webapp (not webapp2)" || fail "web script: mxdetour-policyd holds lists webapp (not webapp2)" "$out"
out=$(inside mxdetour-policyd holds counts local_user=webapp 2>&1)
# The held messages gave back what they counted: 20 of 20, the next held.
printf '%s\n' "$out" | grep 'local_user limit' | has -E '\b20/20 in 1h\b' &&
	pass "web script: holds counts local_user=webapp: 20/20 in 1h (the held 30 not counted)" ||
	fail "web script: holds counts local_user=webapp: 20/20 in 1h (the held 30 not counted)" "$out"
if out=$(inside mxdetour-policyd holds release local_user:webapp 2>&1); then
	released() { [ "$(web_sent rs-web)" -ge 50 ]; }
	if wait_for 90 released && [ "$(web_held)" = 0 ]; then
		pass "web script: holds release local_user:webapp delivered the 30"
	else
		fail "web script: holds release local_user:webapp delivered the 30" "delivered $(web_sent rs-web) of 50, held $(web_held)" "$out"
	fi
else
	fail "web script: holds release local_user:webapp" "$out"
fi
phase_end

# ---------------------------------------------------------------- DNS down: local mail
phase_start "DNS down: local mail"
inside systemctl stop rs-fakedns
T=$(now)
printf 'Subject: rs-dnsdown\n\nlocal mail while DNS is down\n' | inside sendmail root
delivered() { insh 'grep -qx "Subject: rs-dnsdown" /var/mail/root 2>/dev/null'; }
deferred() { jsince "$T" | grep -E 'to=<root' | has 'status=deferred'; }
wait_for 25 eval 'delivered || deferred'
if delivered; then
	pass "dns-down: sendmail root delivered to /var/mail/root"
else
	fail "dns-down: sendmail root delivered to /var/mail/root" "$(jsince "$T" | grep -E 'postfix|mxdetour' | grep -v 'decision' | tail -15)" "$(inside postqueue -p | tail -6)"
fi
out=$(jsince "$T" | grep -E 'to=<root' | grep 'status=deferred')
[ -z "$out" ] && pass "dns-down: local mail never deferred" || fail "dns-down: local mail never deferred" "$out"
inside systemctl start rs-fakedns
# Leave no deferred local mail behind for the phases that count.
inside postsuper -d ALL deferred >/dev/null 2>&1
phase_end

# ---------------------------------------------------------------- reserved domain
phase_start "reserved domain bounces"
T=$(now)
printf 'Subject: rs-reserved\n\nto a reserved domain\n' | inside sendmail user@example.org
gone() {
	[ -z "$(inside postqueue -j 2>&1 | grep -F 'user@example.org')" ] && [ "$(insh 'ls /var/spool/postfix/maildrop | wc -l')" = 0 ] &&
		jsince "$T" | grep -F 'to=<user@example.org>' | has 'status=bounced'
}
wait_for 10 gone
out=$(inside postqueue -j 2>&1 | grep -F 'user@example.org')
md=$(insh 'ls /var/spool/postfix/maildrop | wc -l')
if [ -z "$out" ] && [ "$md" = 0 ]; then
	pass "reserved: nothing left in maildrop or queue after 10 s"
else
	fail "reserved: nothing left in maildrop or queue after 10 s" "maildrop files: $md" "postqueue -j: $out" \
		"$(jsince "$T" | grep -E 'postfix|mxdetour' | grep -v decision | sort -u -k5 | tail -12)"
fi
out=$(jsince "$T" | grep -F 'to=<user@example.org>' | grep 'status=bounced')
[ -n "$out" ] && pass "reserved: status=bounced in the log" || fail "reserved: status=bounced in the log" "$(jsince "$T" | grep -F 'example.org' | tail -8)"
# A message stuck in maildrop would be retried forever: drop it.
insh 'rm -f /var/spool/postfix/maildrop/*'
phase_end

# ---------------------------------------------------------------- broken configuration
phase_start "broken config"
inside cp -p $TOML /root/mxdetour.toml.good
if ! insh "grep -q '^check_interval = ' $TOML && sed -i 's/^check_interval = .*/check_interval = \"soon\"/' $TOML"; then
	insh "sed -i 's/^\\[transports\\]/[transports]\\nbogus = 1/' $TOML"
fi
T=$(now)
inside systemctl restart mxdetour-policyd >/dev/null 2>&1
log "restart with a broken file: rc $?"
hangs=0 answers=() i=0
end=$(($(date +%s) + 20))
while [ "$(date +%s)" -lt $end ]; do
	i=$((i + 1))
	t1=$(now)
	out=$(inside timeout 1 postmap -q $PLAIN $SOCKETMAP 2>&1)
	rc=$?
	[ $rc -ne 124 ] || hangs=$((hangs + 1))
	answers+=("$(printf '%2d rc=%-3s %.2fs %s' "$i" "$rc" "$(since "$t1")" "$(echo "$out" | head -1)")")
	sleep 0.5
done
[ $hangs -eq 0 ] && pass "bad-config: postmap -q answers within 1 s ($i probes in 20 s)" ||
	fail "bad-config: postmap -q answers within 1 s (every probe for 20 s)" "$hangs of $i timed out:" "${answers[@]}"
starts=$(jsince "$T" -u mxdetour-policyd | grep -c 'Started mxdetour-policyd\|Starting mxdetour-policyd')
exits=$(jsince "$T" -u mxdetour-policyd | grep -c 'Main process exited')
nrestarts=$(inside systemctl show -p NRestarts --value mxdetour-policyd)
if [ "$exits" -le 3 ]; then
	pass "bad-config: no start loop ($exits exits, $starts start lines, NRestarts=$nrestarts in 20 s)"
else
	fail "bad-config: no start loop ($exits exits, $starts start lines, NRestarts=$nrestarts in 20 s)" \
		"$(jsince "$T" -u mxdetour-policyd | tail -8)"
fi
refused=$(printf '%s\n' "${answers[@]}" | grep -c 'Connection refused')
sockstate=$(inside systemctl is-active mxdetour-policyd.socket mxdetour-policyd-socketmap.socket | tr '\n' ' ')
if [ "$refused" -eq 0 ] && [ "$sockstate" = "active active " ]; then
	pass "bad-config: sockets keep listening (no probe refused)"
else
	fail "bad-config: sockets keep listening (no probe refused)" "$refused of $i probes refused; sockets now: $sockstate" \
		"$(jsince "$T" | grep -E 'mxdetour-policyd(-socketmap)?\.socket' | sort -u -k5 | tail -6)"
fi
# An admin looks twice: three looks a second apart, one must name it.
for look in 1 2 3; do
	status=$(inside systemctl status --no-pager -l -n 20 mxdetour-policyd 2>&1)
	printf '%s\n' "$status" | has 'mxdetour.toml:[0-9]' && break
	sleep 1
done
printf '%s\n' "$status" | has 'mxdetour.toml:[0-9]' && pass "bad-config: systemctl status names file:line (look $look)" ||
	fail "bad-config: systemctl status names file:line (3 looks)" "$status"
jsince "$T" -u mxdetour-policyd | has 'mxdetour.toml:[0-9].*check_interval\|mxdetour.toml:[0-9].*bogus' &&
	pass "bad-config: the journal names file:line and key" ||
	fail "bad-config: the journal names file:line and key" "$(jsince "$T" -u mxdetour-policyd | tail -10)"
inside cp -p /root/mxdetour.toml.good $TOML
T=$(now)
if ! inside systemctl reload mxdetour-policyd >/dev/null 2>&1; then
	log "reload failed (unit not running?): restart"
	inside systemctl restart mxdetour-policyd
fi
ok_after() { [ "$(inside timeout 1 postmap -q $GOOGLE $SOCKETMAP 2>/dev/null)" = "$RELAY" ]; }
if wait_for 10 ok_after; then
	pass "bad-config: fixed file, full service again ($GOOGLE -> relay)"
else
	fail "bad-config: fixed file, full service again ($GOOGLE -> relay)" "$(inside timeout 1 postmap -q $GOOGLE $SOCKETMAP 2>&1)" \
		"$(inside systemctl status --no-pager -n 10 mxdetour-policyd 2>&1)"
fi
check "bad-config: sockets still listening" inside systemctl is-active mxdetour-policyd.socket mxdetour-policyd-socketmap.socket mxdetour-milter.socket
# Postfix's resolver may still be blocked on a lookup from the broken
# spell: let the queue run again before the next phase counts.
inside postqueue -f >/dev/null 2>&1
phase_end

# ---------------------------------------------------------------- restarts and kills under load
phase_start "restarts under load"
N=${MXDETOUR_REALSERVER_LOAD:-100}
T=$(now)
inside rs-smtpload -n "$N" -interval 150ms -from $FROM -rcpt "$GOOGLE,$PLAIN" -prefix rs-load >"$WORK/out/load.txt" 2>&1 &
LOADPID=$!
mainpid() { inside systemctl show -p MainPID --value "$1"; }
sleep 2; inside systemctl restart mxdetour-policyd; log "restarted policyd"
sleep 3; p=$(mainpid mxdetour-policyd); inside kill -9 "$p"; log "kill -9 policyd ($p)"
sleep 3; inside systemctl restart mxdetour-milter; log "restarted milter"
sleep 3; p=$(mainpid mxdetour-milter); inside kill -9 "$p"; log "kill -9 milter ($p)"
wait $LOADPID
rc=$?
tail -1 "$WORK/out/load.txt"
[ $rc -eq 0 ] && pass "load: $N messages accepted, none refused" || fail "load: $N messages accepted, none refused" "$(cat "$WORK/out/load.txt")"
count_load() { # how many distinct rs-load-N arrived at their own sink
	local n=0 i s
	for i in $(seq 0 $((N - 1))); do
		s=relay; [ $((i % 2)) -eq 1 ] && s=direct
		sink_find $s "rs-load-$i" >/dev/null && n=$((n + 1))
	done
	echo $n
}
all_load() { [ "$(count_load)" -eq "$N" ]; }
if wait_for 90 all_load; then
	pass "load: all $N delivered, each on its route ($(printf '%.0f' "$(since "$T")") s after the first)"
else
	missing=()
	for i in $(seq 0 $((N - 1))); do
		s=relay; [ $((i % 2)) -eq 1 ] && s=direct
		sink_find $s "rs-load-$i" >/dev/null || missing+=("rs-load-$i")
	done
	fail "load: all $N delivered, each on its route" "$(count_load) of $N in 90 s; missing: ${missing[*]}" "$(inside postqueue -p | tail -15)"
fi
log "during the load: $(jsince "$T" | grep -c 'status=deferred') deferrals, $(jsince "$T" | grep -c 'status=sent') deliveries, $(jsince "$T" | grep -c 'not_signed') unsigned"
check "load: daemons back (both services active)" inside systemctl is-active mxdetour-policyd mxdetour-milter
phase_end

# ---------------------------------------------------------------- logs
phase_start "logs"
# Reloads with a good file, as an admin does after each edit (README):
# what ExecReload prints is in the log too.
inside systemctl reload mxdetour-policyd mxdetour-milter || fail "logs: systemctl reload of both with a good file"
inside logger -p mail.info rs-suite-marker; sleep 1
ours=$(insh "grep -E 'mxdetour-(policyd|milter)\\[[0-9]+\\]: ' /var/log/mail.log")
nours=$(printf '%s\n' "$ours" | grep -c .)
tabs=$(printf '%s\n' "$ours" | grep -F '#011')
[ "$nours" -gt 0 ] && [ -z "$tabs" ] && pass "mail.log: $nours lines of ours, none with #011" ||
	fail "mail.log: $nours lines of ours, none with #011" "$(printf '%s\n' "$tabs" | head -5)"
# One event, one line: no line of ours continues another (indented, a
# stack frame, a goroutine header, a lone bracket or brace).
cont=$(printf '%s\n' "$ours" | sed -E 's/^.*mxdetour-(policyd|milter)\[[0-9]+\]: //' |
	grep -E '^([[:space:]]|#011|goroutine [0-9]+ \[|created by |[]})]|[A-Za-z0-9_./*()-]+\(.*\)$)|\.go:[0-9]+')
[ -z "$cont" ] && pass "mail.log: each event of ours is one line" || fail "mail.log: each event of ours is one line" "$(printf '%s\n' "$cont" | head -8)"
warn=$(inside journalctl --no-pager -q -p warning -u mxdetour-policyd -o cat)
# info-level events of policyd (a level word, as older builds wrote, or
# the events every start and every decision log at info)
info=$(printf '%s\n' "$warn" | grep -Ei '^(debug|info)\b|decide: decision|^(started|listening|watchdog|reloaded)\b')
[ -n "$warn" ] && [ -z "$info" ] && pass "journal: -p warning -u mxdetour-policyd has warnings, no info lines" ||
	fail "journal: -p warning -u mxdetour-policyd has warnings, no info lines" "warning lines: $(printf '%s\n' "$warn" | grep -c .)" "$(printf '%s\n' "${info:-$warn}" | head -8)"
phase_end

# ---------------------------------------------------------------- purge
phase_start "purge"
check "purge: apt purge -y mxdetour" inside apt purge -y mxdetour
left=$(insh '
for f in /etc/mxdetour /var/lib/mxdetour /run/mxdetour /usr/sbin/mxdetour-policyd /usr/sbin/mxdetour-milter \
	/usr/lib/sysusers.d/mxdetour.conf /usr/share/doc/mxdetour /usr/share/man/man8/mxdetour-policyd.8.gz; do
	[ ! -e "$f" ] || { echo "$f"; find "$f" -mindepth 1 2>/dev/null | head -5; }
done
find /lib/systemd/system /usr/lib/systemd/system /etc/systemd/system -name "mxdetour*" 2>/dev/null
find /etc/postfix -iname "*mxdetour*" 2>/dev/null
getent passwd mxdetour && echo "(user mxdetour)"
getent group mxdetour && echo "(group mxdetour)"
ss -ltn | grep -E ":1004[012] " && echo "(a port of ours still listens)"
pgrep -a mxdetour
true')
# The DKIM keys are the admin's (README: "your keys are never deleted"):
# they, and the directories holding them, may stay.
keys=$(printf '%s\n' "$left" | grep -E '^/etc/mxdetour/dkim/sender-c\.zz\.[a-z0-9]+\.key$')
left=$(printf '%s\n' "$left" | grep -vE '^/etc/mxdetour(/dkim(/sender-c\.zz\.[a-z0-9]+\.key)?)?$' | grep .)
[ -z "$keys" ] || log "kept by design: $(echo $keys)"
[ -z "$left" ] && pass "purge: nothing of ours left (but the admin's DKIM keys)" || fail "purge: nothing of ours left (but the admin's DKIM keys)" "$left"
# Whatever main.cf still names, Postfix must go on delivering.
T=$(now)
printf 'Subject: rs-after-purge\n\nafter the purge\n' | inside sendmail root
purged_ok() { insh 'grep -qx "Subject: rs-after-purge" /var/mail/root 2>/dev/null'; }
if wait_for 20 purged_ok; then
	pass "purge: Postfix still delivers local mail"
else
	fail "purge: Postfix still delivers local mail" "$(jsince "$T" | grep -E 'postfix' | tail -8)" \
		"main.cf still names: $(inside postconf -n | grep -E '1004[0-2]|mxdetour' | tr '\n' ';')"
fi
phase_end
