package server

// Outbound limits: the daemon's limiter, built from [[limits]] and
// [compromise] and kept across reloads; its country source belongs to
// each Generation.

import (
	"fmt"
	"path/filepath"
	"reflect"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/geo"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/setup"
	"github.com/mxdetour/mxdetour/policyd/fleet"
	"github.com/mxdetour/mxdetour/policyd/learn"
	"github.com/mxdetour/mxdetour/policyd/limits"
)

// LimitsState is where the limiter keeps its state: limits.json beside
// learn's state file; "" (none) when that is no absolute path.
func LimitsState(cfg *config.Config) string {
	if !filepath.IsAbs(cfg.Learn.StateFile) {
		return ""
	}
	return limits.StatePath(cfg.Learn.StateFile)
}

// LimitOptions maps [[limits]], [compromise] and milter.trusted_networks;
// src is the country source (nil: countries are not counted).
func LimitOptions(cfg *config.Config, src geo.Source) limits.Options {
	o := limits.Options{Trusted: cfg.Milter.TrustedNetworks, Geo: src}
	for _, l := range cfg.Limits {
		o.Limits = append(o.Limits, limits.Limit{Key: limits.KeyType(l.Key), Max: l.Max, Window: l.Window.Duration,
			Provider: l.DestinationProvider, Action: limits.Action(l.Action), Exempt: l.Exempt, Raise: l.Raise})
	}
	if c := cfg.Compromise; c.Enabled {
		o.Compromise = limits.Compromise{MaxCountries: c.MaxCountries, MaxClients: c.MaxClients, Window: c.Window.Duration}
	}
	if c := cfg.Compromise; c.Failures {
		o.Failures = limits.Failures{Ratio: c.FailureRatio, Min: c.FailureMin, Window: c.FailureWindow.Duration}
	}
	return o
}

// limitsGeo is the country source of [milter.geo] for the compromise
// signal; nil when the signal is off. Its source is guarded: closing it
// (a reload replaced it, or the daemon stops) waits for the lookups in
// flight.
type limitsGeo struct {
	opts geo.Options
	r    *lookup.Client
	src  *geo.Guarded // nil when no source is set
}

// openLimitsGeo opens the country source of cfg, or returns old when
// neither the source nor the resolver changed.
func openLimitsGeo(cfg *config.Config, r *lookup.Client, old *limitsGeo) (*limitsGeo, error) {
	if !cfg.Compromise.Enabled {
		return nil, nil
	}
	g := &limitsGeo{opts: setup.Geo(cfg.Milter.Geo), r: r}
	if old != nil && old.r == r && reflect.DeepEqual(old.opts, g.opts) {
		return old, nil
	}
	src, err := geo.Open(g.opts, r)
	if err != nil {
		return nil, fmt.Errorf("compromise: %w", err)
	}
	if src != nil {
		g.src = geo.Guard(src)
	}
	return g, nil
}

// source is the limits' country source (nil: none).
func (g *limitsGeo) source() geo.Source {
	if g == nil || g.src == nil {
		return nil
	}
	return g.src
}

// close closes the source once no lookup uses it.
func (g *limitsGeo) close() {
	if g != nil && g.src != nil {
		_ = g.src.Close()
	}
}

// startLimits builds the limiter of cfg with g's country source, loads
// its state and starts saving; g's Setup limits with it.
func (s *Server) startLimits(cfg *config.Config, g *Generation) error {
	var store limits.Store = limits.NewMemory()
	if cfg.Fleet.RedisURL != "" {
		// With a fleet every host counts into the same Redis keys (a
		// reload keeps the store, as it keeps [fleet]), through the
		// fleet's connection; without learning there is no fleet to
		// share, and the counters open their own.
		conn := (*fleet.Conn)(nil)
		if s.fleet != nil {
			conn = s.fleet.Conn
		} else {
			var err error
			if conn, _, err = OpenFleet(cfg); err != nil {
				return ConfigError{err}
			}
			s.countersConn = conn
		}
		s.counters = fleet.NewCounters(conn, limits.NewMemory(), s.log.Named("limits"))
		store = s.counters
	}
	s.limiter = limits.New(LimitOptions(cfg, g.geo.source()), store, s.alerts, s.log.Named("limits"))
	if path := LimitsState(cfg); path != "" {
		if err := s.limiter.Open(path); err != nil {
			return err
		}
	}
	s.limiter.Run()
	g.answers.Limits = s.limiter
	if s.limiter.Active() {
		s.log.Info("outbound limits on", zap.Int("limits", len(cfg.Limits)), zap.Bool("compromise", cfg.Compromise.Enabled),
			zap.Bool("failure_ratio", cfg.Compromise.Failures))
	}
	return nil
}

// delivered hands the learner's delivery results to the limits'
// failure-ratio signal; cls tells the failures that are refusals of our
// address, which are not the account's.
func (s *Server) delivered(cls *learn.Classifier) func(learn.Delivery) {
	return func(dv learn.Delivery) {
		s.limiter.Delivered(limits.Result{QueueID: dv.QueueID, Recipient: dv.Recipient, Status: dv.Status, DSN: dv.DSN, At: dv.Time},
			func() bool { return cls.Classify(dv).Block })
	}
}

// stopLimits saves the counters and waits for their write-backs to Redis
// before the connection they use is closed.
func (s *Server) stopLimits() {
	if s.limiter != nil {
		s.limiter.Stop()
	}
	if s.counters != nil {
		s.counters.Wait()
	}
	if s.countersConn != nil {
		s.countersConn.Close()
	}
}
