#!/usr/bin/env bash
# What users feel is the whole mail server: a throwaway Postfix fed by its
# own smtp-source (8 sessions, 4 KB messages from a trusted client on
# 127.0.0.1) delivering to smtp-sink, one warm instance, every mode side by
# side in one run:
#   alone     Postfix with no mxdetour
#   routing   + mxdetour-policyd as transport_maps (socketmap, unix socket)
#   null      routing + a do-nothing go-milter that reads every header and
#             the body, then accepts, negotiating what mxdetour-milter
#             negotiates: what any milter costs Postfix
#   dual      routing + mxdetour-milter signing RSA-2048 and Ed25519
#   opendkim  routing + Debian's OpenDKIM signing with the same RSA key
# null and dual run twice, on a unix socket and on TCP loopback (modes
# null-unix, null-tcp, dual-unix, dual-tcp; each wiring its own process);
# opendkim on a unix socket. Each milter line
# ends with the milter's own CPU time per message, which the load on a
# shared machine skews far less than the rates; the last lines compare
# dual over TCP with dual over unix, and dual with null over unix.
# Loopback only; needs root and Debian's postfix (and opendkim for the
# last mode).
#   test/bench-postfix.sh [MESSAGES]      (default 2000 per mode)
#   KEEP=1 keeps bin/postfix-bench.* (maillog, daemon logs) afterwards.
#   MODES="null-unix null-tcp" runs only those modes (the first one is
#   then the base of the "of Postfix alone" column).
set -euo pipefail
cd "$(dirname "$0")/.."
msgs=${1:-2000}
sessions=${SESSIONS:-8}
warm=200
smtp=2525 sinkport=2526 dualport=10542 nullport=10543
. test/benchlib.sh
need_free_ports $smtp $sinkport $dualport $nullport
mkdir -p bin
T=$(mktemp -d "$PWD/bin/postfix-bench.XXXXXX")
chmod 755 "$T" # Postfix's processes (user postfix) reach the sockets in it
cleanup() {
  postfix -c "$T/conf" stop >/dev/null 2>&1 || true
  kill $(jobs -p) 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT

go build -o "$T/policyd" ./policyd
go build -o "$T/milter" ./milter
go build -o "$T/fakedns" ./test/fakedns
go build -o "$T/null" ./test/nullmilter
"$T/milter" keygen -domain example.org -selector rsa -algorithm rsa -dir "$T" >/dev/null
"$T/milter" keygen -domain example.org -selector ed -algorithm ed25519 -dir "$T" >/dev/null

# The DNS of the benchmark zone (d0.bench has its MX at Google).
"$T/fakedns" -domains 10 > "$T/dns.addr" &
for _ in $(seq 50); do [ -s "$T/dns.addr" ] && break; sleep 0.1; done

cat > "$T/mxdetour.toml" <<EOT
[log]
level = "info"
[dns]
servers = ["$(cat "$T/dns.addr")"]
[policyd]
policy_listen = ""
socketmap_listen = "unix:$T/socketmap.sock"
socket_mode = "0666"
[transports]
relay = "relay:[127.0.0.1]:$sinkport"
[learn]
enabled = false
state_file = "$T/state.json"
[milter]
listen = "unix:$T/milter.sock"
socket_mode = "0666"
[[milter.dkim.keys]]
domain = "example.org"
selector = "rsa"
key_file = "$T/example.org.rsa.key"
[[milter.dkim.keys]]
domain = "example.org"
selector = "ed"
key_file = "$T/example.org.ed.key"
EOT
"$T/policyd" -config "$T/mxdetour.toml" 2>"$T/policyd.log" &
sed "s|^listen = .*|listen = \"127.0.0.1:$dualport\"|" "$T/mxdetour.toml" > "$T/milter-tcp.toml"
declare -A pid
"$T/milter" -config "$T/mxdetour.toml" 2>"$T/milter.log" & pid[dual-unix]=$!
"$T/milter" -config "$T/milter-tcp.toml" 2>"$T/milter-tcp.log" & pid[dual-tcp]=$!
"$T/null" -like-mxdetour -listen "unix:$T/null.sock" 2>"$T/null.log" & pid[null-unix]=$!
"$T/null" -like-mxdetour -listen "127.0.0.1:$nullport" 2>"$T/null-tcp.log" & pid[null-tcp]=$!
have_opendkim=0
if [ -x /usr/sbin/opendkim ]; then
  have_opendkim=1
  cat > "$T/opendkim.conf" <<EOT
Mode s
Syslog no
Domain example.org
Selector rsa
KeyFile $T/example.org.rsa.key
Socket local:$T/opendkim.sock
UMask 000
Canonicalization relaxed/relaxed
OversignHeaders From
Background no
UserID root
EOT
  /usr/sbin/opendkim -x "$T/opendkim.conf" -f 2>"$T/opendkim.log" & pid[opendkim]=$!
fi
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in $(seq 100); do
  [ -S "$T/socketmap.sock" ] && [ -S "$T/milter.sock" ] && [ -S "$T/null.sock" ] &&
    listening $dualport && listening $nullport &&
    { [ $have_opendkim = 0 ] || [ -S "$T/opendkim.sock" ]; } && break
  sleep 0.1
done

# The throwaway Postfix (../shared/reference/postfix.md section 4.2).
mkdir -p "$T/conf" "$T/queue" "$T/data" "$T/sink"
chown postfix:postfix "$T/data" "$T/sink"
chmod 700 "$T/data"
cat > "$T/conf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $T/queue
data_directory = $T/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mta.test.invalid
mydomain = test.invalid
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relayhost = [127.0.0.1]:$sinkport
smtp_dns_support_level = disabled
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = $T/maillog
maillog_file_prefixes = $T
smtputf8_enable = no
biff = no
milter_default_action = accept
EOF
cat > "$T/conf/master.cf" <<EOF
127.0.0.1:$smtp inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
rewrite-smtpd unix -    -       n       -       -       trivial-rewrite
  -o transport_maps=
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
# Every message is appended to one file, to count its signatures.
smtp-sink -4 -u postfix -D "$T/sink/all" -c 127.0.0.1:$sinkport 256 >"$T/sink.log" 2>&1 &
postfix -c "$T/conf" check
postfix -c "$T/conf" start >/dev/null

# mode NAME: set Postfix's wiring for the mode, and reload.
mode() {
  local tm="" mil="" so=""
  case $1 in
    alone) ;;
    routing) tm="socketmap:unix:$T/socketmap.sock:transport" ;;
    null-unix) tm="socketmap:unix:$T/socketmap.sock:transport" mil="unix:$T/null.sock" ;;
    null-tcp) tm="socketmap:unix:$T/socketmap.sock:transport" mil="inet:127.0.0.1:$nullport" ;;
    dual-unix) tm="socketmap:unix:$T/socketmap.sock:transport" mil="unix:$T/milter.sock" ;;
    dual-tcp) tm="socketmap:unix:$T/socketmap.sock:transport" mil="inet:127.0.0.1:$dualport" ;;
    opendkim) tm="socketmap:unix:$T/socketmap.sock:transport" mil="unix:$T/opendkim.sock" ;;
  esac
  [ -n "$tm" ] && so="rewrite-smtpd"
  postconf -c "$T/conf" -e "transport_maps = $tm" "smtpd_milters = $mil" "non_smtpd_milters = $mil" \
    "rewrite_service_name = ${so:-rewrite}"
  postfix -c "$T/conf" reload >/dev/null 2>&1
}

sent() { grep -c 'status=sent' "$T/maillog" 2>/dev/null || true; }

# run N: N messages through Postfix; prints the seconds until the sink has
# them all.
run() {
  local n=$1 before target t0 t1
  before=$(sent)
  target=$((before + n))
  t0=$(date +%s.%N)
  smtp-source -4 -s "$sessions" -m "$n" -l 4096 -M client.test.invalid \
    -f sender@example.org -t rcpt@d0.bench -S "bench" 127.0.0.1:$smtp
  for _ in $(seq 6000); do
    [ "$(sent)" -ge "$target" ] && break
    sleep 0.05
  done
  t1=$(date +%s.%N)
  [ "$(sent)" -ge "$target" ] || { echo "only $(( $(sent) - before )) of $n delivered" >&2; tail "$T/maillog" >&2; exit 1; }
  echo "$t0 $t1" | awk '{ printf "%.3f", $2 - $1 }'
}

echo "Postfix $(postconf -d -h mail_version), $sessions sessions, $msgs messages of 4 KB per mode; load average $(cut -d' ' -f1-3 /proc/loadavg)"
base=""
declare -A rate ticks
for m in ${MODES:-alone routing null-unix null-tcp dual-unix dual-tcp opendkim}; do
  [ $m = opendkim ] && [ $have_opendkim = 0 ] && continue
  mode $m
  run $warm >/dev/null # warm: processes started, caches filled
  : > "$T/sink/all"
  p=${pid[$m]:-}
  [ -z "$p" ] || c0=$(cpu "$p")
  secs=$(run "$msgs")
  [ -z "$p" ] || ticks[$m]=$(( $(cpu "$p") - c0 ))
  rate[$m]=$(echo "$msgs $secs" | awk '{ printf "%.0f", $1 / $2 }')
  [ -z "$base" ] && base=${rate[$m]}
  sigs=$(grep -c '^DKIM-Signature:' "$T/sink/all" || true)
  printf '%-9s %6s msg/s  (%.2f of Postfix alone)  %3d s  DKIM-Signature fields: %4d  %s\n' \
    "$m" "${rate[$m]}" "$(echo "${rate[$m]} $base" | awk '{ print $1 / $2 }')" "${secs%.*}" "$sigs" \
    "${p:+milter CPU/msg $(per_op "${ticks[$m]}" "$msgs")}"
done
# ratio A B: A's rate as a share of B's, and the same for CPU per message.
ratio() {
  awk -v ra="${rate[$1]}" -v rb="${rate[$2]}" -v ca="${ticks[$1]}" -v cb="${ticks[$2]}" -v a="$1" -v b="$2" \
    'BEGIN { printf "%-9s / %-9s  rate %.2f  milter CPU/msg %.2f\n", a, b, ra / rb, cb ? ca / cb : 0 }'
}
[ -n "${rate[dual-unix]:-}" ] && [ -n "${rate[dual-tcp]:-}" ] && ratio dual-tcp dual-unix
[ -n "${rate[dual-unix]:-}" ] && [ -n "${rate[null-unix]:-}" ] && ratio dual-unix null-unix
[ -n "${rate[null-unix]:-}" ] && [ -n "${rate[null-tcp]:-}" ] && ratio null-tcp null-unix
true
