package listen

import (
	"errors"
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// PostfixUser is the user Postfix's processes run as (mail_owner) on
// Debian, Fedora and the rest: a unix listener lets it in.
const PostfixUser = "postfix"

// warnEvery is how often at most one uid's refused connections are logged.
const warnEvery = time.Minute

// postfixUID is the uid of PostfixUser, looked up once per process; ok is
// false where there is no such user (Postfix not installed).
var postfixUID = sync.OnceValues(func() (uint32, bool) {
	u, err := user.Lookup(PostfixUser)
	if err != nil {
		return 0, false
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(uid), true
})

// PeerListener is a unix listener that hands out only the connections
// whose peer, as the kernel reports it (SO_PEERCRED, fixed at connect),
// runs as an allowed uid: root, the daemon's own, the owner of the
// socket file, and Postfix's user. Any other connection is closed at
// once, before a byte is read, and counted; each offending uid is logged
// at most once a minute (with how many it tried meanwhile), so a local
// user cannot flood the log.
//
// A file mode lets a user in or not by its groups; this check is the one
// the file's mode, a misplaced socket or a SocketMode= typo cannot undo.
type PeerListener struct {
	net.Listener
	allowed []uint32
	log     *zap.Logger
	now     func() time.Time // for tests

	refused atomic.Uint64
	mu      sync.Mutex
	warned  map[uint32]*refusals
}

// refusals is one uid's refused connections since its last warning.
type refusals struct {
	last  time.Time // of the last warning
	since uint64    // refused since then, not logged yet
}

// OnlyPeers wraps a unix stream listener in a PeerListener; any other
// listener (TCP) is returned as it is, since TCP carries no credentials.
func OnlyPeers(ln net.Listener, log *zap.Logger) net.Listener {
	if ln.Addr().Network() != "unix" {
		return ln
	}
	if log == nil {
		log = zap.NewNop()
	}
	allowed := []uint32{0, uint32(os.Geteuid())}
	if uid, ok := postfixUID(); ok {
		allowed = append(allowed, uid)
	}
	// The file's owner: whom systemd's SocketUser= or a chown made it for.
	// Unreadable (private/ is Postfix's own 0700 directory) or abstract:
	// Postfix's user stands for it.
	if path := ln.Addr().String(); path != "" && path[0] != '@' {
		if fi, err := os.Stat(path); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				allowed = append(allowed, st.Uid)
			}
		}
	}
	slices.Sort(allowed)
	return &PeerListener{Listener: ln, allowed: slices.Compact(allowed), log: log, now: time.Now, warned: map[uint32]*refusals{}}
}

// Allowed returns the uids let in, in order.
func (l *PeerListener) Allowed() []uint32 { return slices.Clone(l.allowed) }

// Refused returns how many connections were refused.
func (l *PeerListener) Refused() uint64 { return l.refused.Load() }

// Accept returns the next connection of an allowed peer; the others are
// closed in the meantime.
func (l *PeerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, pid, err := peer(c)
		if err == nil && slices.Contains(l.allowed, uid) {
			return c, nil
		}
		c.Close()
		l.refuse(uid, pid, err)
	}
}

// peer returns the uid and pid of c's peer.
func peer(c net.Conn) (uid uint32, pid int32, err error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, 0, errors.New("not a unix connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, 0, err
	}
	if credErr != nil {
		return 0, 0, credErr
	}
	return cred.Uid, cred.Pid, nil
}

// refuse counts a refused connection and logs it unless its uid was
// logged less than a minute ago.
func (l *PeerListener) refuse(uid uint32, pid int32, credErr error) {
	l.refused.Add(1)
	key := uid
	if credErr != nil {
		key = ^uint32(0) // all connections without credentials share one warning
	}
	now := l.now()
	l.mu.Lock()
	r := l.warned[key]
	if r == nil {
		if len(l.warned) >= 1024 { // uids are few; forget the quiet ones
			for k, v := range l.warned {
				if now.Sub(v.last) >= warnEvery {
					delete(l.warned, k)
				}
			}
		}
		r = &refusals{}
		l.warned[key] = r
	}
	r.since++
	if !r.last.IsZero() && now.Sub(r.last) < warnEvery {
		l.mu.Unlock()
		return
	}
	n := r.since
	r.last, r.since = now, 0
	l.mu.Unlock()

	if credErr != nil {
		l.log.Warn("refused a connection whose peer's credentials cannot be read (logged at most once a minute)",
			zap.String("addr", "unix:"+l.Addr().String()), zap.Uint64("refused_since_last_warning", n), zap.Error(credErr))
		return
	}
	fields := []zap.Field{zap.String("addr", "unix:"+l.Addr().String()), zap.Uint32("uid", uid)}
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		fields = append(fields, zap.String("user", u.Username))
	}
	fields = append(fields, zap.Int32("pid", pid), zap.Uint64("refused_since_last_warning", n),
		zap.Uint32s("allowed_uids", l.allowed))
	l.log.Warn("refused a connection from a local user who is neither root, this daemon's user nor Postfix's (logged once a minute per user)", fields...)
}
