#!/usr/bin/env bash
# Measures mxdetour-milter (RSA-2048, Ed25519, dual) against the
# do-nothing milter on go-milter (the floor) and Debian's OpenDKIM signing
# with the same RSA key, with one load tool, over TCP on loopback.
#   test/bench-milter.sh [DURATION]      (default 10s per measurement)
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10s}
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
conf() { # listen, then key selectors
  local f="$tmp/$1.toml"; shift
  printf '[log]\nlevel = "warn"\n[milter]\nlisten = "%s"\n' "$1" > "$f"; shift
  for s in "$@"; do
    printf '[[milter.dkim.keys]]\ndomain = "example.org"\nselector = "%s"\nkey_file = "%s"\n' "$s" "$tmp/example.org.$s.key" >> "$f"
  done
  echo "$f"
}
"$tmp/milter" -config "$(conf rsa 127.0.0.1:10080 rsa)" &
"$tmp/milter" -config "$(conf ed 127.0.0.1:10081 ed)" &
"$tmp/milter" -config "$(conf dual 127.0.0.1:10082 rsa ed)" &
"$tmp/null" -listen 127.0.0.1:10083 2>/dev/null &
if [ -x /usr/sbin/opendkim ]; then
  cat > "$tmp/opendkim.conf" <<EOT
Mode s
Syslog no
Domain example.org
Selector rsa
KeyFile $tmp/example.org.rsa.key
Socket inet:10084@127.0.0.1
Canonicalization relaxed/relaxed
OversignHeaders From
Background no
UserID root
EOT
  /usr/sbin/opendkim -x "$tmp/opendkim.conf" -f 2>"$tmp/opendkim.log" &
  sleep 1; [ -s "$tmp/opendkim.log" ] && cat "$tmp/opendkim.log" >&2
fi
sleep 1.5
for s in 1 8 64; do
  echo "floor           $("$tmp/load" -addr 127.0.0.1:10083 -sessions $s -duration "$dur")"
  echo "mxdetour rsa    $("$tmp/load" -addr 127.0.0.1:10080 -sessions $s -duration "$dur")"
  echo "mxdetour ed25519 $("$tmp/load" -addr 127.0.0.1:10081 -sessions $s -duration "$dur")"
  echo "mxdetour dual   $("$tmp/load" -addr 127.0.0.1:10082 -sessions $s -duration "$dur")"
  if [ -x /usr/sbin/opendkim ]; then
    echo "opendkim rsa    $("$tmp/load" -addr 127.0.0.1:10084 -sessions $s -duration "$dur")"
  fi
done
