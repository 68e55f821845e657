#!/usr/bin/env bash
# Measures mxdetour-policyd against the do-nothing responder (the floor),
# both protocols, 8 and 64 persistent connections, in one run on this
# machine. Cached decisions: the load tool warms the cache first.
#   test/bench-policyd.sh [DURATION]      (default 10s per measurement)
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10s}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
go build -o "$tmp/policyd" ./policyd
go build -o "$tmp/null" ./test/nullpolicyd
go build -o "$tmp/load" ./test/loadpolicy
go build -o "$tmp/fakedns" ./test/fakedns
"$tmp/fakedns" -domains 100 > "$tmp/dns.addr" &
for _ in $(seq 50); do [ -s "$tmp/dns.addr" ] && break; sleep 0.1; done
cat > "$tmp/mxdetour.toml" <<EOT
[log]
level = "${MXDETOUR_BENCH_LOG:-info}"
[dns]
servers = ["$(cat "$tmp/dns.addr")"]
[policyd]
policy_listen = "127.0.0.1:10060"
socketmap_listen = "127.0.0.1:10061"
[transports]
relay = "relay:[mx03.example.net]:587"
[learn]
enabled = false
EOT
"$tmp/policyd" -config "$tmp/mxdetour.toml" 2>/dev/null &
"$tmp/null" -policy 127.0.0.1:10070 -socketmap 127.0.0.1:10071 &
sleep 1
for proto in socketmap policy; do
  for conns in 8 64; do
    if [ $proto = policy ]; then p=10060; n=10070; else p=10061; n=10071; fi
    echo "floor   $("$tmp/load" -proto $proto -addr 127.0.0.1:$n -conns $conns -duration "$dur")"
    echo "policyd $("$tmp/load" -proto $proto -addr 127.0.0.1:$p -conns $conns -duration "$dur")"
  done
done
