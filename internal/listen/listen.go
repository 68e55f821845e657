// Package listen opens the listening sockets of both daemons, either from
// the configuration's notation — "host:port" for TCP, "unix:/path" for a
// unix socket (created with the configured mode, a stale socket file
// replaced, unlinked on Close) — or as systemd passes them under socket
// activation (sd_listen_fds(3): LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES).
// OnlyPeers guards a unix listener by its clients' peer credentials.
package listen

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
)

// Listen opens addr.
func Listen(addr string, mode os.FileMode) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		return ln, nil
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen on %s: %s exists and is not a socket", addr, path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen on %s: another process is serving it", addr)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("listen on %s: removing the stale socket: %w", addr, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}

// Systemd returns the listening sockets systemd passed to this process,
// by the FileDescriptorName= of their socket unit (a unit with several
// ListenStream= lines gives several under one name). It returns nil, nil
// when LISTEN_FDS is not set, and an error when it is set for another
// process (LISTEN_PID): such sockets are not ours to take. Either way the
// LISTEN_* variables are removed from the environment, so that programs
// we run do not take them for theirs. Sockets systemd passes without a
// name appear as "LISTEN_FD_3" and so on; a socket that is not a
// listening stream socket is left out.
//
// A socket taken from systemd is never unlinked on Close: systemd owns
// it, and keeps it open across our restarts.
func Systemd() (map[string][]net.Listener, error) {
	if os.Getenv("LISTEN_FDS") == "" {
		return nil, nil
	}
	if pid := os.Getenv("LISTEN_PID"); pid != strconv.Itoa(os.Getpid()) {
		activation.Files(true) // unsets the variables, returns nothing
		return nil, fmt.Errorf("LISTEN_FDS is set for process %q, not for this one (%d): the sockets are ignored", pid, os.Getpid())
	}
	return activation.ListenersWithNames()
}

// Addr writes a listener's address in the configuration's notation, so
// it can be compared with a configured address.
func Addr(ln net.Listener) string {
	a := ln.Addr()
	if a.Network() == "unix" {
		return "unix:" + a.String()
	}
	return a.String()
}
