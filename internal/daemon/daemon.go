// Package daemon runs mxdetour's daemons, under systemd or on their own,
// as systemd.service(5), systemd.socket(5) and sd_notify(3) describe:
//
//   - listeners: the sockets systemd passes (socket activation, by
//     FileDescriptorName=), else the configured addresses;
//   - readiness: READY=1 once every listener is served;
//   - the watchdog: when WATCHDOG_USEC is set, WATCHDOG=1 every half
//     interval, and only while every accept loop is alive and the daemon's
//     own health probe passes, so that a hung daemon is killed and
//     restarted rather than left holding Postfix's connections;
//   - SIGHUP: RELOADING=1, the daemon's reload (built on the side and
//     swapped in; on failure the running configuration stays), READY=1;
//   - SIGTERM, SIGINT: STOPPING=1, stop accepting, drain within a grace
//     period, stop the daemon's background work, and return nil (exit 0).
//
// Each daemon hands Run its servers and callbacks; its main only parses
// flags, loads the configuration and builds the parts.
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/mxdetour/mxdetour/internal/listen"
)

// Exit codes of both daemons and their commands. A unit restarts after 1
// (and after 2, Go's exit code for an unrecovered panic) but not after 78
// (RestartPreventExitStatus=78): a broken configuration will not mend
// itself.
const (
	ExitFailure = 1
	ExitConfig  = 78 // EX_CONFIG in sysexits(3): a usage or configuration error
)

// Server serves connections on listeners until Shutdown, which stops
// accepting, lets requests in flight finish until ctx ends, and returns.
// Serve may be called for several listeners at once.
type Server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// Socket is one service of a daemon.
type Socket struct {
	Name   string      // FileDescriptorName= of the socket under systemd: "policy", "socketmap", "milter"
	Addr   string      // configured address ("host:port", "unix:/path"); "" for none
	Mode   os.FileMode // of a configured unix socket
	Server Server
}

// Options are what a daemon hands to Run.
type Options struct {
	Sockets []Socket
	// Reload reads the configuration again, builds what it determines on
	// the side and swaps it in; on an error nothing has changed. Nil: SIGHUP
	// only logs. It runs beside the signal loop, one at a time (SIGHUPs
	// that arrive meanwhile make one more reload), and ctx ends when the
	// daemon is told to stop: a slow reload (a self-check against dead
	// blocklists) must not hold SIGTERM.
	Reload func(ctx context.Context) error
	// Health is the watchdog's probe: a real request through the daemon's
	// own serving path, answered before ctx ends. Nil: accept loops only.
	Health func(ctx context.Context) error
	// Stop ends the daemon's background work after the servers drained.
	Stop func(ctx context.Context)
	// Grace bounds the drain at SIGTERM (default 10s).
	Grace time.Duration
	Log   *zap.Logger
}

// Run serves until SIGTERM, SIGINT or the end of ctx (nil: drained and
// stopped) or until a server fails (the error; the caller exits 1).
func Run(ctx context.Context, o Options) error {
	if o.Grace <= 0 {
		o.Grace = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	// Signals first: SIGHUP's default action would kill us.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	r := &runner{o: o, log: o.Log}
	if err := r.listen(); err != nil {
		return err
	}
	errs := make(chan error, len(r.served))
	for _, s := range r.served {
		go func() {
			err := s.srv.Serve(s.ln)
			if err == nil {
				err = errors.New("stopped accepting")
			}
			errs <- fmt.Errorf("serving %s on %s: %w", s.name, s.addr, err)
		}()
	}
	r.notify("READY=1\nSTATUS=" + r.status())

	wctx, stopWatchdog := context.WithCancel(ctx)
	defer stopWatchdog()
	go r.watchdog(wctx)
	rctx, stopReloads := context.WithCancel(ctx)
	reloads, reloaderDone := make(chan struct{}, 1), make(chan struct{})
	go func() {
		defer close(reloaderDone)
		for {
			select {
			case <-rctx.Done():
				return
			case <-reloads:
				r.reload(rctx)
			}
		}
	}()
	// halt ends the watchdog and any reload under way (within the grace
	// period), then drains and stops.
	halt := func(why string) {
		stopWatchdog()
		stopReloads()
		select {
		case <-reloaderDone:
		case <-time.After(r.o.Grace):
			r.log.Error("a reload did not end when told to; stopping beside it")
		}
		r.stop(why)
	}
	for {
		select {
		case <-ctx.Done():
			halt("context ended")
			return nil
		case err := <-errs:
			if r.stopping.Load() {
				continue
			}
			r.log.Error("a server failed; stopping", zap.Error(err))
			halt("a server failed")
			return err
		case s := <-sigs:
			if s == syscall.SIGHUP {
				select {
				case reloads <- struct{}{}:
				default: // one is already waiting: it reads the newest file
				}
				continue
			}
			halt(s.String())
			return nil
		}
	}
}

// runner is one Run.
type runner struct {
	o        Options
	log      *zap.Logger
	served   []*served
	stopping atomic.Bool
	probing  atomic.Bool // a health probe is running
}

// served is one listener and the server on it.
type served struct {
	name, addr, from string
	ln               *watched
	srv              Server
}

// listen takes each socket from systemd by name, else opens its
// configured address.
func (r *runner) listen() error {
	activated, err := listen.Systemd()
	if err != nil {
		r.log.Warn("socket activation", zap.Error(err))
	}
	for _, s := range r.o.Sockets {
		lns, from := activated[s.Name], "systemd"
		delete(activated, s.Name)
		if len(lns) == 0 {
			if s.Addr == "" {
				r.log.Info("not listening: no address configured", zap.String("socket", s.Name))
				continue
			}
			ln, err := listen.Listen(s.Addr, s.Mode)
			if err != nil {
				r.closeAll(activated)
				return err
			}
			lns, from = []net.Listener{ln}, "config"
		}
		for _, ln := range lns {
			// A unix socket hands out only the connections of root, our own
			// user, the socket's owner and Postfix's user (peer credentials).
			ln = listen.OnlyPeers(ln, r.log.With(zap.String("socket", s.Name)))
			sv := &served{name: s.Name, addr: listen.Addr(ln), from: from, ln: watch(ln), srv: s.Server}
			r.served = append(r.served, sv)
			fields := []zap.Field{zap.String("socket", s.Name), zap.String("addr", sv.addr), zap.String("from", from)}
			if pl, ok := ln.(*listen.PeerListener); ok {
				fields = append(fields, zap.Uint32s("allowed_uids", pl.Allowed()))
			}
			r.log.Info("listening", fields...)
		}
		if from == "systemd" && s.Addr != "" && !r.serves(s.Name, s.Addr) {
			r.log.Warn("the socket unit's address is served, not the configured one", zap.String("socket", s.Name), zap.String("configured", s.Addr))
		}
	}
	var tcp []string
	for _, s := range r.served {
		if !strings.HasPrefix(s.addr, "unix:") {
			tcp = append(tcp, s.addr)
		}
	}
	if len(tcp) > 0 {
		r.log.Warn("TCP listeners are open to any local user and any host that can reach them (whoever can connect can ask and count): fine for a first try; the packaged configuration uses unix sockets only Postfix can open",
			zap.Strings("tcp", tcp))
	}
	for name, lns := range activated {
		r.log.Warn("systemd passed a socket this daemon has no use for; set FileDescriptorName=", zap.String("name", name), zap.Int("sockets", len(lns)))
		for _, ln := range lns {
			ln.Close()
		}
	}
	return nil
}

func (r *runner) serves(name, addr string) bool {
	for _, s := range r.served {
		if s.name == name && s.addr == addr {
			return true
		}
	}
	return false
}

func (r *runner) closeAll(rest map[string][]net.Listener) {
	for _, s := range r.served {
		s.ln.Close()
	}
	for _, lns := range rest {
		for _, ln := range lns {
			ln.Close()
		}
	}
}

// status is the STATUS= line systemctl status shows.
func (r *runner) status() string {
	parts := make([]string, 0, len(r.served))
	for _, s := range r.served {
		parts = append(parts, s.name+" on "+s.addr)
	}
	return "serving " + strings.Join(parts, ", ")
}

// reload runs the daemon's reload between RELOADING=1 and READY=1. A
// reload that fails, or panics, leaves the running configuration.
func (r *runner) reload(ctx context.Context) {
	if r.o.Reload == nil {
		r.log.Info("SIGHUP: nothing to reload")
		return
	}
	r.notify(reloading())
	if err := r.call(func() error { return r.o.Reload(ctx) }); err != nil {
		r.log.Error("reload failed; keeping the running configuration", zap.Error(err))
		r.notify("READY=1\nSTATUS=reload failed, running the previous configuration: " + oneLine(err.Error()))
		return
	}
	r.log.Info("reloaded")
	r.notify("READY=1\nSTATUS=" + r.status())
}

func (r *runner) call(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return f()
}

// stop tells systemd, stops accepting, drains, then stops the daemon's
// background work, all within the grace period.
func (r *runner) stop(why string) {
	r.stopping.Store(true)
	r.notify("STOPPING=1")
	r.log.Info("draining and exiting", zap.String("why", why), zap.Duration("grace", r.o.Grace))
	for _, s := range r.served {
		s.ln.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.o.Grace)
	defer cancel()
	var wg sync.WaitGroup
	seen := map[Server]bool{}
	for _, s := range r.served {
		if seen[s.srv] {
			continue
		}
		seen[s.srv] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.srv.Shutdown(ctx); err != nil && !errors.Is(err, net.ErrClosed) {
				r.log.Warn("connections still open at the end of the grace period were closed", zap.String("socket", s.name), zap.Error(err))
			}
		}()
	}
	wg.Wait()
	if r.o.Stop != nil {
		r.o.Stop(ctx)
	}
}

// notify sends state to systemd when NOTIFY_SOCKET is set.
func (r *runner) notify(state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		r.log.Warn("sd_notify", zap.String("state", state), zap.Error(err))
	}
}

// reloading is RELOADING=1 with the MONOTONIC_USEC= that systemd 253
// and later expect with it (sd_notify(3)).
func reloading() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return "RELOADING=1"
	}
	return fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000)
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }

// Setting is one configuration key a reload cannot apply, with its value
// in the running configuration and in the new one (any values: compared
// deeply, so slices and maps are fine).
type Setting struct {
	Key      string
	Was, Now any
}

// RestartOnly returns the keys of the settings whose value changed, for
// the one warning a reload gives about what waits for a restart.
func RestartOnly(settings ...Setting) []string {
	var keys []string
	for _, s := range settings {
		if !reflect.DeepEqual(s.Was, s.Now) {
			keys = append(keys, s.Key)
		}
	}
	return keys
}

// ParseFlags parses a command's arguments into fs. When ok is false the
// command ends at once with code: 0 after -h (the usage was printed, as
// asked), ExitConfig after a flag that does not parse.
func ParseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return ExitConfig, false
	}
	return 0, true
}
