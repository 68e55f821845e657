#!/usr/bin/env bash
# Measures mxdetour-policyd against the do-nothing responder (the floor),
# both protocols, 1, 8 and 64 persistent connections, in one run on this
# machine. Cached decisions: the load tool warms the cache first. For the
# policy protocol a third daemon with two outbound limits ([[limits]],
# never reached) is measured beside them: the load's client is trusted, so
# every request is counted.
# Each line ends with the server's own CPU time per request, which the
# load tool sharing the cores does not skew as it does the rates.
#
# On a shared machine the speed of the cores drifts by more than the
# differences measured, within seconds. So the servers are measured in
# turn, ROUNDS times (floor, policyd, limits, floor, ...), and each
# "median" line gives, for each server, the median over the rounds of its
# rate as a share of the floor's in the same round.
#   test/bench-policyd.sh [DURATION [ROUNDS]]   (default 4s per measurement, 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-4s}
rounds=${2:-3}
. test/benchlib.sh
need_free_ports 10060 10061 10070 10071 10080 10081
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
state_file = "$tmp/state.json"
EOT
sed -e 's/127.0.0.1:10060/127.0.0.1:10080/' -e 's/127.0.0.1:10061/127.0.0.1:10081/' "$tmp/mxdetour.toml" > "$tmp/limits.toml"
cat >> "$tmp/limits.toml" <<EOT
[milter]
trusted_networks = ["192.0.2.0/24"]
[[limits]]
key = "sasl_username"
max = 1000000000
window = "1h"
[[limits]]
key = "client_address"
max = 1000000000
window = "1h"
destination_provider = "google"
EOT
"$tmp/policyd" -config "$tmp/mxdetour.toml" 2>/dev/null & pid_policyd=$!
"$tmp/policyd" -config "$tmp/limits.toml" 2>/dev/null & pid_limits=$!
"$tmp/null" -policy 127.0.0.1:10070 -socketmap 127.0.0.1:10071 & pid_floor=$!
sleep 1
for pid in $pid_policyd $pid_limits $pid_floor; do
  kill -0 "$pid" 2>/dev/null || { echo "a server did not start (pid $pid)" >&2; exit 1; }
done
# measure NAME PID PORT: one load run against PORT, with the server's own
# CPU time per request (the ratio of rates depends on how much the load
# tool, sharing the cores, takes; CPU per request does not). Sets rate.
measure() {
  local before after out n
  # Warm (caches, connections' goroutines), then count only the measuring.
  "$tmp/load" -proto "$proto" -addr "127.0.0.1:$3" -conns "$conns" -duration 1s -warmup 0s >/dev/null
  before=$(cpu "$2")
  out=$("$tmp/load" -proto "$proto" -addr "127.0.0.1:$3" -conns "$conns" -duration "$dur" -warmup 0s)
  after=$(cpu "$2")
  n=$(echo "$out" | sed -n 's/.* requests=\([0-9]*\) .*/\1/p')
  rate=$(echo "$out" | sed -n 's/.* rate=\([0-9]*\)\/s.*/\1/p')
  echo "$1 $out cpu/request=$(per_op $((after - before)) "$n")"
}
# median N...: the median of the numbers.
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# pct A B: A as a whole percentage of B.
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", b ? 100 * a / b + 0.5 : 0 }'; }
for proto in socketmap policy; do
  for conns in 1 8 64; do
    if [ $proto = policy ]; then p=10060; n=10070; else p=10061; n=10071; fi
    shares_policyd=() shares_limits=()
    for round in $(seq "$rounds"); do
      measure "floor  " $pid_floor $n; floor=$rate
      measure "policyd" $pid_policyd $p; shares_policyd+=("$(pct "$rate" "$floor")")
      if [ $proto = policy ]; then
        measure "limits " $pid_limits 10080; shares_limits+=("$(pct "$rate" "$floor")")
      fi
    done
    line="median  proto=$proto conns=$conns policyd=$(median "${shares_policyd[@]}")% (rounds: ${shares_policyd[*]})"
    if [ $proto = policy ]; then
      line="$line limits=$(median "${shares_limits[@]}")% (rounds: ${shares_limits[*]})"
    fi
    echo "$line of the floor"
  done
done
