# Shared by test/bench-*.sh (sourced, not run).

# need_free_ports PORT...: exit when one of the loopback ports is taken. A
# daemon that cannot bind fails quietly in the bench scripts (its output
# goes to /dev/null), and the load would measure whatever listens there.
need_free_ports() {
  local p
  for p in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "port $p is in use (a daemon left from an earlier run?); stop it first" >&2
      exit 1
    fi
  done
}

# cpu PID: the process's user+system CPU time so far, in clock ticks.
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# per_op TICKS COUNT: CPU time per operation, in microseconds.
per_op() { awk -v d="$1" -v hz="$(getconf CLK_TCK)" -v n="$2" 'BEGIN { printf "%.1fus", n ? d / hz / n * 1e6 : 0 }'; }
