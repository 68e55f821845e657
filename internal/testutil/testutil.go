// Package testutil holds the small helpers the tests share: a free
// loopback port, a buffer a test can read while a child process writes to
// it, Eventually to wait on a condition instead of sleeping, and a Clock
// a test moves by hand.
package testutil

import (
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// for a child process to listen on. It is drawn below the kernel's
// ephemeral range (net.ipv4.ip_local_port_range), never from it: a port
// the kernel hands out for outgoing connections can be taken by any of
// Postfix's smtp clients between this check and the child's bind, which
// made the suite fail on a busy machine. Within one test binary a port is
// never handed out twice.
func FreePort(t testing.TB) int {
	t.Helper()
	lo := ephemeralLow()
	portMu.Lock()
	defer portMu.Unlock()
	if portNext == 0 {
		// Each test binary starts at its own place so that two packages
		// running at once rarely probe the same ports.
		portNext = 10000 + (os.Getpid()*7919)%(lo-10000)
	}
	for range lo - 10000 {
		p := portNext
		portNext++
		if portNext >= lo {
			portNext = 10000
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ln.Close()
		return p
	}
	t.Fatalf("no free port on 127.0.0.1 between 10000 and %d", lo)
	return 0
}

var (
	portMu   sync.Mutex
	portNext int
)

// ephemeralLow is the first port of the kernel's ephemeral range, or
// 32768 (Linux's default) when it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if lo, err := strconv.Atoi(f[0]); err == nil && lo > 11000 {
				return lo
			}
		}
	}
	return 32768
}

// LockedBuffer collects a daemon's output while a test reads it.
type LockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
