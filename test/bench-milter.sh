#!/usr/bin/env bash
# Measures mxdetour-milter (RSA-2048, Ed25519, dual) against the
# do-nothing milter on go-milter (the floor) and Debian's OpenDKIM signing
# with the same RSA key, with one load tool, side by side in one run.
# Every milter listens on a unix socket (the fair case for OpenDKIM, and
# what a local Postfix uses); NET=tcp puts them on loopback TCP instead.
#   test/bench-milter.sh [DURATION]      (default 10s per measurement)
#   NET=tcp test/bench-milter.sh 5s
#   KEYS=300 test/bench-milter.sh        our milters also load key_dir with
#                                        299 more domains' keys (the hoster's case)
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10s}
net=${NET:-unix}
. test/benchlib.sh
if [ "$net" = tcp ]; then need_free_ports 10080 10081 10082 10083 10084; fi
# OpenDKIM refuses keys under world-writable directories such as /tmp.
mkdir -p bin
tmp=$(mktemp -d "$PWD/bin/bench.XXXXXX")
chmod 700 "$tmp"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
go build -o "$tmp/milter" ./milter
go build -o "$tmp/null" ./test/nullmilter
go build -o "$tmp/load" ./test/loadmilter
"$tmp/milter" keygen -domain example.org -selector rsa -algorithm rsa -dir "$tmp" >/dev/null
"$tmp/milter" keygen -domain example.org -selector ed -algorithm ed25519 -dir "$tmp" >/dev/null
keys=${KEYS:-1}
mkdir -p "$tmp/keydir"
if [ "$keys" -gt 1 ]; then
  seq -f 'customer%03g.zz' 1 $((keys - 1)) > "$tmp/domains"
  "$tmp/milter" keygen -all -config /dev/null -postfix-config - -domains "$tmp/domains" -dir "$tmp/keydir" \
    -algorithms ed25519 -owner "" >/dev/null
fi
# addr NAME PORT: the address of one milter, in loadmilter's syntax.
addr() { if [ "$net" = tcp ]; then echo "127.0.0.1:$2"; else echo "unix:$tmp/$1.sock"; fi; }
conf() { # name, then key selectors
  local f="$tmp/$1.toml" a; a=$(addr "$1" "$2"); shift 2
  printf '[log]\nlevel = "warn"\n[milter]\nlisten = "%s"\n[milter.dkim]\nkey_dir = "%s"\n' "$a" "$tmp/keydir" > "$f"
  for s in "$@"; do
    printf '[[milter.dkim.keys]]\ndomain = "example.org"\nselector = "%s"\nkey_file = "%s"\n' "$s" "$tmp/example.org.$s.key" >> "$f"
  done
  echo "$f"
}
"$tmp/milter" -config "$(conf rsa 10080 rsa)" & pid_rsa=$!
"$tmp/milter" -config "$(conf ed 10081 ed)" & pid_ed=$!
"$tmp/milter" -config "$(conf dual 10082 rsa ed)" & pid_dual=$!
"$tmp/null" -listen "$(addr null 10083)" 2>/dev/null & pid_null=$!
if [ -x /usr/sbin/opendkim ]; then
  if [ "$net" = tcp ]; then sock="inet:10084@127.0.0.1"; else sock="local:$tmp/opendkim.sock"; fi
  cat > "$tmp/opendkim.conf" <<EOT
Mode s
Syslog no
Domain example.org
Selector rsa
KeyFile $tmp/example.org.rsa.key
Socket $sock
Canonicalization relaxed/relaxed
OversignHeaders From
Background no
UserID root
EOT
  /usr/sbin/opendkim -x "$tmp/opendkim.conf" -f 2>"$tmp/opendkim.log" & pid_opendkim=$!
fi
# Wait for every listener rather than for a fixed time.
ready() { # NAME PORT
  if [ "$net" = tcp ]; then (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; else [ -S "$tmp/$1.sock" ]; fi
}
for i in $(seq 100); do
  ok=1
  for np in rsa:10080 ed:10081 dual:10082 null:10083; do ready "${np%:*}" "${np#*:}" || ok=0; done
  if [ -x /usr/sbin/opendkim ]; then ready opendkim 10084 || ok=0; fi
  [ $ok = 1 ] && break
  sleep 0.1
done
[ -s "$tmp/opendkim.log" ] && cat "$tmp/opendkim.log" >&2
echo "milters on $net sockets, $dur per measurement, $keys domain(s) with keys"
# measure LABEL PID NAME PORT: one load run, with the milter's own CPU time
# per message (the load tool shares the cores and skews the rates, not
# this).
measure() {
  local before after out n
  before=$(cpu "$2")
  out=$("$tmp/load" -addr "$(addr "$3" "$4")" -sessions "$s" -duration "$dur")
  after=$(cpu "$2")
  n=$(echo "$out" | sed -n 's/.* messages=\([0-9]*\) .*/\1/p')
  echo "$1 $out cpu/message=$(per_op $((after - before)) "$n")"
}
for s in 1 8 64; do
  measure "floor           " $pid_null null 10083
  measure "mxdetour rsa    " $pid_rsa rsa 10080
  measure "mxdetour ed25519" $pid_ed ed 10081
  measure "mxdetour dual   " $pid_dual dual 10082
  if [ -x /usr/sbin/opendkim ]; then
    measure "opendkim rsa    " $pid_opendkim opendkim 10084
  fi
done
