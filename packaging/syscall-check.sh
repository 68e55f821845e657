#!/usr/bin/env bash
# syscall-check.sh: the units' SystemCallFilter= (@system-service without
# @privileged and @resources) must allow every system call the daemons
# make. Without systemd as PID 1 here, the units cannot run, so each built
# binary (bin/) runs under strace, as an unprivileged user as under
# User=mxdetour, on loopback ports with a resolver that does not answer
# (127.0.0.1:5399): it starts, answers a policy request and a socketmap
# request, serves /metrics, reloads on SIGHUP and drains on SIGTERM. Then
# every call it made is looked up in the filter's sets. Also checks each
# unit's systemd-analyze security exposure is at most 1.5.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "syscall check: $*" >&2; exit 1; }
command -v strace >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends strace >/dev/null

for s in policyd milter; do
	score=$(systemd-analyze security --offline=true "contrib/systemd/mxdetour-$s.service" 2>&1 | sed -nE 's/.*Overall exposure level for .*: ([0-9.]+).*/\1/p')
	echo "systemd-analyze security mxdetour-$s.service: $score"
	awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 1.5) }' || fail "mxdetour-$s.service exposure $score > 1.5"
done

# expand SET: the system calls of a filter set, nested sets included.
expand() {
	systemd-analyze syscall-filter "$1" | sed -n '/^@/,$p' | tail -n +2 | sed -nE 's/^ +([@a-z0-9_-]+).*/\1/p' |
		while read -r x; do case $x in @*) expand "$x" ;; *) echo "$x" ;; esac; done
}
t=$(mktemp -d)
pids=()
# stop: SIGTERM the daemons under strace (killing strace would leave them running).
stop() { for p in "${pids[@]}"; do kill "$(pgrep -P "$p")" 2>/dev/null || true; done; }
trap 'stop; [ -n "${KEEP:-}" ] || rm -rf "$t"' EXIT
expand @system-service | sort -u > "$t/allowed"
{ expand @privileged; expand @resources; } | sort -u > "$t/denied"

# Ports picked at random (other daemons, an e2e run, may hold fixed ones)
# and below the kernel's ephemeral range (32768-60999), where a local end of
# some outgoing connection could make the bind fail.
port=$((20000 + RANDOM % 1200 * 10))
touch "$t/mail.log"
cat > "$t/c.toml" <<EOF
[dns]
servers = ["127.0.0.1:5399"]
timeout = "200ms"
attempts = 1
[self]
ipv4 = ["127.0.0.2"]
[policyd]
policy_listen = "127.0.0.1:$((port))"
socketmap_listen = "127.0.0.1:$((port + 1))"
[learn]
log_file = "$t/mail.log"
state_file = "$t/state.json"
[milter]
listen = "127.0.0.1:$((port + 2))"
[metrics]
policyd_listen = "127.0.0.1:$((port + 3))"
milter_listen = "127.0.0.1:$((port + 4))"
EOF
chown -R nobody "$t"
for b in policyd milter; do
	setpriv --reuid=nobody --regid=nogroup --clear-groups strace -f -qq -o "$t/$b.trace" "bin/mxdetour-$b" -config "$t/c.toml" > "$t/$b.out" 2>&1 &
	pids+=($!)
done
# up: wait for a listener.
up() {
	for _ in $(seq 300); do if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi; sleep 0.1; done
	tail -n 20 "$t"/*.out >&2
	fail "nothing listens on $1"
}
up $port && up $((port + 1)) && up $((port + 2)) && up $((port + 3)) && up $((port + 4))
exec 3<>/dev/tcp/127.0.0.1/$((port))
printf 'request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=a@b.example\nsender=c@d.example\nclient_address=127.0.0.1\n\n' >&3
read -r -t 5 answer <&3 || fail "no policy answer"
exec 3>&-
echo "policy answer: $answer"
exec 3<>/dev/tcp/127.0.0.1/$((port + 1))
q='transport bob@nowhere.org'
printf '%d:%s,' "${#q}" "$q" >&3
read -r -t 5 -d , answer <&3 || fail "no socketmap answer"
exec 3>&-
echo "socketmap answer: $answer"
for p in $((port + 3)) $((port + 4)); do
	exec 3<>"/dev/tcp/127.0.0.1/$p"
	printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
	grep -q '^mxdetour_' <&3 || fail "no mxdetour_ metrics on $p"
	exec 3>&-
done
for p in "${pids[@]}"; do kill -HUP "$(pgrep -P "$p")"; done
# reloaded: wait for both to log their reload.
for _ in $(seq 100); do grep -q reloaded "$t/policyd.out" && grep -q reloaded "$t/milter.out" && break; sleep 0.1; done
stop
for p in "${pids[@]}"; do wait "$p" || true; done
pids=()
for b in policyd milter; do
	sed -nE 's/^[0-9]+ +([a-z0-9_]+)\(.*/\1/p; s/^[0-9]+ +<\.\.\. ([a-z0-9_]+) resumed>.*/\1/p' "$t/$b.trace" | sort -u > "$t/$b.calls"
	grep -q reloaded "$t/$b.out" || fail "$b did not reload: $(cat "$t/$b.out")"
	echo "$b: $(wc -l < "$t/$b.calls") distinct system calls"
	out=$(comm -23 "$t/$b.calls" "$t/allowed")
	[ -z "$out" ] || fail "$b calls outside @system-service: $out"
	out=$(comm -12 "$t/$b.calls" "$t/denied")
	[ -z "$out" ] || fail "$b calls in @privileged or @resources: $out"
done
echo "syscall check: OK"
