// Package server is mxdetour-policyd's daemon: what a configuration
// builds (resolver, blocklist self-check, decision engine, learner,
// outbound limits' set-up) as one Generation, swapped whole by a reload
// and stopped whole, and what lives across reloads (learned blocks, the
// alerter, the responders and their counters, the limits' counters, the
// fleet, the metrics endpoint). internal/daemon runs it: sockets,
// signals, readiness and the watchdog.
package server

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/alert"
	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/internal/metrics"
	"github.com/mxdetour/mxdetour/policyd/fleet"
	"github.com/mxdetour/mxdetour/policyd/learn"
	"github.com/mxdetour/mxdetour/policyd/limits"
	"github.com/mxdetour/mxdetour/policyd/policy"
	"github.com/mxdetour/mxdetour/policyd/respond"
	"github.com/mxdetour/mxdetour/policyd/socketmap"
)

// Server is mxdetour-policyd's running parts. What a configuration
// determines is its Generation; what must survive a reload is owned here
// and never replaced.
type Server struct {
	log     *zap.Logger
	version string
	serving bool         // Start, not Open: the limits' country data is opened too
	store   *learn.Store // nil when learning is off at start
	alerts  *alert.Alerter
	resp    *respond.Responder
	probe   *respond.Responder // the watchdog's: same Setup, no log lines, no counters
	metrics *metrics.Server
	fleet   *fleet.Fleet // [fleet]: nil without redis_url; lives across reloads like store

	listeners atomic.Pointer[[]metrics.Listener] // the protocol servers' counters, for metrics

	limiter  *limits.Limiter // outbound limits: the counters live across reloads
	counters *fleet.Counters // with [fleet]: the limits' counters in Redis; nil without
	// countersConn is the counters' own connection, when there is no
	// fleet (learning off) to share one with.
	countersConn *fleet.Conn

	cancel context.CancelFunc // ends the alerter and the fleet
	wg     sync.WaitGroup     // the alerter's and the fleet's goroutines

	mu  sync.Mutex // serialises reloads and stop
	gen atomic.Pointer[Generation]
	// next is the generation a reload is building, while its self-check
	// runs: alerts describe the providers it routes by (describing).
	next atomic.Pointer[Generation]
}

// Options are what Start needs besides the configuration.
type Options struct {
	Log     *zap.Logger
	Version string // for the metrics' build info
}

func newServer(cfg *config.Config, log *zap.Logger) (*Server, error) {
	s := &Server{log: log}
	if cfg.Learn.Enabled {
		var err error
		if s.store, err = learn.OpenStore(cfg.Learn.StateFile, log.Named("learn")); err != nil {
			return nil, fmt.Errorf("learn: %w", err)
		}
	}
	return s, nil
}

// Open builds the decision side of cfg (resolver, listings, learned
// blocks, engine) as the daemon does, for the check command; nothing
// runs.
func Open(cfg *config.Config, log *zap.Logger) (*Server, error) {
	s, err := newServer(cfg, log)
	if err != nil {
		return nil, err
	}
	g, err := s.build(cfg, nil)
	if err != nil {
		return nil, err
	}
	s.gen.Store(g)
	return s, nil
}

// Current is the generation deciding now.
func (s *Server) Current() *Generation { return s.gen.Load() }

// answers is the responders' Setup: the current generation's.
func (s *Server) answers() *respond.Setup { return &s.gen.Load().answers }

// Start builds the daemon of cfg and starts its background work; the
// runner opens the listeners (Sockets). Errors that mean "fix the
// configuration" are ConfigError.
func Start(cfg *config.Config, o Options) (*Server, error) {
	s, err := newServer(cfg, o.Log)
	if err != nil {
		return nil, err
	}
	s.version, s.serving = o.Version, true
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.alerts = alert.New(alertOptions(cfg), s.log.Named("alert"))
	s.wg.Go(func() { s.alerts.Run(ctx) })
	if s.fleet, err = startFleet(cfg, s.store, s.log.Named("fleet")); err != nil { // [fleet]
		cancel()
		return nil, err
	}
	if s.fleet != nil {
		s.wg.Go(func() { s.fleet.Run(ctx) })
	}
	g, err := s.build(cfg, nil)
	if err == nil {
		err = s.startLimits(cfg, g) // before anything answers or learns
	}
	if err == nil {
		s.resp = respond.New(s.answers, s.log.Named("decide"))
		s.probe = respond.New(s.answers, zap.NewNop())
		s.gen.Store(g)
		s.run(g)
		err = s.serveMetrics(cfg)
	}
	if err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if s.gen.Load() == nil {
			g.close()
		}
		s.Stop(ctx)
		return nil, err
	}
	return s, nil
}

// Responder is the responder that answers Postfix.
func (s *Server) Responder() *respond.Responder { return s.resp }

// DryRun reports whether no relay is configured.
func (s *Server) DryRun() bool { return s.Current().engine.DryRun() }

// Sockets are the daemon's two services, by their systemd names.
func (s *Server) Sockets() []daemon.Socket {
	p := s.Current().cfg.Policyd
	mode, _ := strconv.ParseUint(p.SocketMode, 8, 32) // validated by config
	pol := policy.NewServer(s.resp, policy.Options{
		IdleTimeout: p.IdleTimeout.Duration, MaxRequestSize: p.MaxRequestSize, MaxConnections: p.MaxConnections,
	}, s.log.Named("policy"))
	smap := socketmap.NewServer(s.resp, socketmap.Options{
		IdleTimeout: p.IdleTimeout.Duration, MaxRequestSize: p.MaxRequestSize, MaxConnections: p.MaxConnections,
	}, s.log.Named("socketmap"))
	s.listeners.Store(&[]metrics.Listener{{Name: "policy", Stats: pol.Stats()}, {Name: "socketmap", Stats: smap.Stats()}})
	return []daemon.Socket{
		{Name: "policy", Addr: p.PolicyListen, Mode: os.FileMode(mode), Server: pol},
		{Name: "socketmap", Addr: p.SocketmapListen, Mode: os.FileMode(mode), Server: smap},
	}
}

// probeAddress is the watchdog's recipient: a reserved domain (RFC 2606),
// decided without DNS, so a slow resolver never fails the probe (Postfix
// is then answered "direct" in time, as it should be) while a deadlocked
// decision does.
const probeAddress = "watchdog@mxdetour.invalid"

// Health is the watchdog's probe: one socketmap request through the
// Setup that serves Postfix, answered before ctx ends.
func (s *Server) Health(ctx context.Context) error {
	r := s.probe.Lookup(ctx, "transport", probeAddress)
	if r.Status != "OK" || !strings.HasPrefix(r.Data, "error:5.1.2 ") {
		return fmt.Errorf("%s was answered %q, want OK error:5.1.2", probeAddress, r.String())
	}
	return nil
}

// Stop ends the background work once the runner has drained the
// listeners, saving learned state and the limits' counters and sending
// the alerts still queued before ctx ends; it returns when every
// goroutine the server started has ended (or ctx has).
func (s *Server) Stop(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.metrics.Close()
	if g := s.gen.Load(); g != nil {
		s.halt(ctx, g)
		g.close()
	}
	s.stopLimits() // saves the counters, before the alerter's last send
	// The alerter sends what is pending before we exit, or logs it as
	// unsent when the grace period ends first.
	s.alerts.Stop(ctx)
	if s.cancel != nil {
		s.cancel()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("the fleet or the alerter did not stop in time")
	}
}
