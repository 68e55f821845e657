package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	sd "github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Activated reports whether systemd passed this process listening
// sockets (sd_listen_fds(3): LISTEN_FDS, with LISTEN_PID our own pid).
func Activated() bool {
	return os.Getenv("LISTEN_FDS") != "" && os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid())
}

// FailOpenOptions are what a daemon whose configuration cannot be used
// hands to RunFailOpen.
type FailOpenOptions struct {
	// Sockets name the servers that give Postfix the fail-open answer
	// (socketmap NOTFOUND, policy DUNNO, milter accept) on the socket
	// systemd passes by that name. Addr and Mode are not used: without a
	// usable configuration only systemd's sockets are known.
	Sockets []Socket
	// Reason is why the configuration cannot be used.
	Reason error
	// Usable checks the configuration again (SIGHUP), exactly as a start
	// would: nil means a start would now succeed.
	Usable func() error
	// Every is how often the reason is logged again (default a minute).
	Every time.Duration
	Log   *zap.Logger
}

// exec replaces the process image; a variable so tests can see the call.
var execve = syscall.Exec

// RunFailOpen keeps Postfix served while the configuration is broken. A
// daemon started by systemd that cannot use its file must not exit: its
// socket units would start it again at the next queued connection, over
// and over, each start exiting before it accepts, and Postfix's lookups
// would wait in the backlog (trivial-rewrite for up to an hour, holding
// every message with it). Instead it takes its sockets from systemd,
// answers the fail-open default on them, tells systemd why (READY=1 with
// STATUS=, so "systemctl status" shows it), logs the reason as an error
// at start and again every Every, and pings the watchdog.
//
// At SIGHUP ("systemctl reload" after fixing the file) it checks the
// configuration with Usable; once usable it executes itself again with
// the same arguments, handing systemd's sockets on unchanged (same pid,
// same LISTEN_* variables), and the new image starts in full service.
// Connections that arrive meanwhile wait in the kernel's queue. At
// SIGTERM it drains and returns nil.
//
// It returns an error only when it cannot serve at all: no sockets from
// systemd, or the re-execution failed.
func RunFailOpen(ctx context.Context, o FailOpenOptions) error {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Every <= 0 {
		o.Every = time.Minute
	}
	if !Activated() {
		return fmt.Errorf("not started by systemd with its sockets: %w", o.Reason)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	// The variables stay set and systemd's descriptors open: they are
	// handed on as they are when the process executes itself again.
	files := activation.Files(false)
	f := &failOpen{o: o}
	for _, s := range o.Sockets {
		for _, file := range files {
			if file.Name() != s.Name {
				continue
			}
			ln, err := net.FileListener(file) // a duplicate, closed on exec
			if err != nil {
				o.Log.Warn("socket activation: not a listening socket", zap.String("socket", s.Name), zap.Error(err))
				continue
			}
			f.served = append(f.served, s)
			f.lns = append(f.lns, ln)
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				s.Server.Serve(ln) //nolint:errcheck // ends with Shutdown
			}()
		}
	}
	if len(f.served) == 0 {
		return fmt.Errorf("systemd passed none of this daemon's sockets: %w", o.Reason)
	}
	status := "STATUS=configuration unusable, answering Postfix with the fail-open default until a reload brings a good file: " + oneLine(o.Reason.Error())
	f.notify("READY=1\n" + status)
	f.complain()

	complain := time.NewTicker(o.Every)
	defer complain.Stop()
	var watchdog <-chan time.Time
	if every, err := sd.SdWatchdogEnabled(false); err == nil && every > 0 {
		t := time.NewTicker(every / 2)
		defer t.Stop()
		watchdog = t.C
		f.notify("WATCHDOG=1")
	}
	for {
		select {
		case <-ctx.Done():
			f.stop()
			return nil
		case <-watchdog:
			f.notify("WATCHDOG=1")
		case <-complain.C:
			f.complain()
		case s := <-sigs:
			if s != syscall.SIGHUP {
				f.notify("STOPPING=1")
				f.stop()
				return nil
			}
			f.notify(reloading())
			err := o.Usable()
			if err != nil {
				o.Reason = err
				status = "STATUS=configuration unusable, answering Postfix with the fail-open default until a reload brings a good file: " + oneLine(err.Error())
				f.complain()
				f.notify("READY=1\n" + status)
				continue
			}
			o.Log.Info("the configuration is usable now: starting again in full service, with the same sockets")
			f.stop()
			return f.reexec(files)
		}
	}
}

type failOpen struct {
	o      FailOpenOptions
	served []Socket
	lns    []net.Listener // one Server may serve several (a unit with two ListenStream=)
	wg     sync.WaitGroup
}

func (f *failOpen) complain() {
	f.o.Log.Error("the configuration cannot be used: answering Postfix with the fail-open default (mail flows the default way, unrouted, unsigned) until it is fixed and reloaded",
		zap.Error(f.o.Reason))
}

func (f *failOpen) notify(state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		f.o.Log.Warn("sd_notify", zap.String("state", state), zap.Error(err))
	}
}

// stop closes the duplicates and lets the answers in flight go out.
// Every listener is closed here: a server's Shutdown knows only the one
// it was last given, and a Serve left accepting would hold stop (and the
// watchdog would kill the daemon) for ever.
func (f *failOpen) stop() {
	for _, ln := range f.lns {
		ln.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	seen := map[Server]bool{}
	for _, s := range f.served {
		if !seen[s.Server] {
			seen[s.Server] = true
			s.Server.Shutdown(ctx) //nolint:errcheck // fail-open answers take microseconds
		}
	}
	f.wg.Wait()
}

// reexec executes this program again with systemd's sockets: they are
// open at the descriptors LISTEN_FDS names (activation.Files only marked
// them close-on-exec), so clearing that flag hands them on.
func (f *failOpen) reexec(files []*os.File) error {
	for _, file := range files {
		if _, err := unix.FcntlInt(file.Fd(), unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("handing on systemd's socket %s: %w", file.Name(), err)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("starting again: %w", err)
	}
	err = execve(exe, os.Args, os.Environ())
	return errors.Join(errors.New("starting again failed"), err)
}
