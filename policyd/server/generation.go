package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/dnsbl"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/postfix"
	"github.com/mxdetour/mxdetour/internal/setup"
	"github.com/mxdetour/mxdetour/policyd/block"
	"github.com/mxdetour/mxdetour/policyd/learn"
	"github.com/mxdetour/mxdetour/policyd/respond"
	"github.com/mxdetour/mxdetour/policyd/route"
)

// Generation is everything one configuration determines: built whole
// beside the running one, swapped in with one atomic store, stopped
// whole. The responders read their Setup (engine, decision deadline,
// status filter, limiter) from it, all from the same generation.
type Generation struct {
	cfg      *config.Config
	resolver *lookup.Client
	monitor  *dnsbl.Monitor // nil when no provider names a zone
	engine   *route.Engine
	// classifier of cfg's learn patterns: the learner's and the delivery
	// status filter's, compiled once.
	classifier *learn.Classifier
	answers    respond.Setup
	geo        *limitsGeo // the limits' country source; nil when off (or built by Open)

	monitorStop context.CancelFunc // nil when the monitor is not ours to stop (handed over) or absent
	monitorDone chan struct{}      // closed when the monitor has stopped
	learnerStop context.CancelFunc
	learned     chan struct{} // closed when the learner has stopped (and saved); nil without one
}

// Config is the configuration g was built from.
func (g *Generation) Config() *config.Config { return g.cfg }

// Engine decides.
func (g *Generation) Engine() *route.Engine { return g.engine }

// Monitor is the self-check of our addresses; nil when no provider names
// a blocklist zone.
func (g *Generation) Monitor() *dnsbl.Monitor { return g.monitor }

// build makes the generation of cfg, reusing from old (the running one,
// or nil) what cfg does not change: the resolver keeps its cache, the
// monitor its last check and the limits their country data when their
// settings are the same.
func (s *Server) build(cfg *config.Config, old *Generation) (*Generation, error) {
	g := &Generation{cfg: cfg}
	cls, err := learn.NewClassifier(cfg.Learn.Patterns, cfg.Learn.IgnorePatterns)
	if err != nil {
		return nil, fmt.Errorf("[learn]: %w", err) // CheckCanStart refused it already
	}
	g.classifier = cls
	if old != nil && reflect.DeepEqual(setup.Lookup(old.cfg.DNS), setup.Lookup(cfg.DNS)) {
		g.resolver = old.resolver
	} else if g.resolver, err = lookup.New(setup.Lookup(cfg.DNS), s.log.Named("lookup")); err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	if mc, ok := s.monitorConfig(cfg); ok {
		if old != nil && old.monitor != nil && g.resolver == old.resolver && sameMonitor(old.cfg, cfg) {
			g.monitor = old.monitor
		} else {
			r, err := lookup.New(selfCheckLookup(cfg), s.log.Named("lookup"))
			if err != nil {
				return nil, fmt.Errorf("dns: %w", err)
			}
			g.monitor = dnsbl.NewMonitor(r, mc, s.log.Named("dnsbl"))
			if old != nil && old.monitor != nil {
				g.monitor.Carry(old.monitor) // routes by what it knew, alerts only news
			}
		}
	}
	var listings route.Listings
	if g.monitor != nil {
		listings = g.monitor
	}
	var blocks route.Blocks
	if s.store != nil && cfg.Learn.Enabled {
		blocks = s.store
	}
	g.engine = route.New(s.routeOptions(cfg), g.resolver, listings, blocks)
	g.answers = respond.Setup{Engine: g.engine, Timeout: cfg.Policyd.DecisionTimeout.Duration,
		Status: statusFilter(cfg, cls), Limits: s.limiter}
	if s.serving {
		var was *limitsGeo
		if old != nil {
			was = old.geo
		}
		if g.geo, err = openLimitsGeo(cfg, g.resolver, was); err != nil {
			if old == nil {
				return nil, ConfigError{err}
			}
			s.log.Error("reload: the compromise signal keeps its country source", zap.Error(err))
			g.geo = was
		}
	}
	return g, nil
}

// close releases what g holds that its successor does not share: the
// limits' country data.
func (g *Generation) close() {
	if g != nil {
		g.geo.close()
	}
}

// closeReplaced releases what old held and g does not reuse.
func (g *Generation) closeReplaced(old *Generation) {
	if old.geo != g.geo {
		old.geo.close()
	}
}

// routeOptions are the decision's options of cfg, with the domains
// Postfix delivers itself added to [domains] local when from_postfix is
// on: mail to root@ our own host name must never be routed, nor deferred
// while DNS fails. Without Postfix (a developer's machine) there is
// nothing to add.
func (s *Server) routeOptions(cfg *config.Config) route.Options {
	o := setup.Route(cfg)
	if !cfg.Domains.FromPostfix {
		return o
	}
	doms, skipped, err := postfix.OwnDomains(context.Background(), cfg.Learn.PostfixConfig)
	if errors.Is(err, postfix.ErrNotInstalled) {
		s.log.Debug("Postfix's own domains not read: postconf not found")
		return o
	}
	if err != nil {
		s.log.Error("Postfix's own domains not read; only [domains] local is never routed", zap.Error(err))
		return o
	}
	for _, e := range skipped {
		s.log.Warn("some of Postfix's own domains cannot be listed; name them in [domains] local", zap.Error(e))
	}
	o.Local = slices.Concat(o.Local, doms)
	s.log.Info("Postfix's own domains are never routed", zap.Strings("domains", doms))
	return o
}

// selfCheckLookup is the resolver of the blocklist self-check: [dns] with
// a cache of its own that keeps no answer longer than one check interval,
// so that a listing or a delisting is seen at the next check however long
// the list's TTL (or [dns] min_ttl) is, and no stale answer stands in for
// a failed check (the monitor keeps the last known state itself).
func selfCheckLookup(cfg *config.Config) lookup.Options {
	o := setup.Lookup(cfg.DNS)
	every := cfg.Self.CheckInterval.Duration / 2 // an answer of one check is gone by the next
	o.MinTTL, o.MaxTTL = 0, min(o.MaxTTL, every)
	o.NegativeMaxTTL, o.ErrorTTL = min(o.NegativeMaxTTL, every), min(o.ErrorTTL, every)
	o.StaleTTL, o.CacheSize = 0, 1000
	return o
}

// monitorConfig is the self-check of cfg; false when no enabled provider
// names a blocklist zone.
func (s *Server) monitorConfig(cfg *config.Config) (dnsbl.MonitorConfig, bool) {
	zones := listedZones(cfg)
	return dnsbl.MonitorConfig{
		IPv4: cfg.Self.IPv4, IPv6: cfg.Self.IPv6, Zones: zones,
		ErrorCodes: cfg.DNSBL.ErrorCodes, ZoneErrorCodes: cfg.DNSBL.ZoneErrorCodes,
		Interval: cfg.Self.CheckInterval.Duration, OnChange: s.listingChanged, OnZoneChange: s.zoneChanged,
	}, len(zones) > 0
}

func sameMonitor(a, b *config.Config) bool {
	return slices.Equal(listedZones(a), listedZones(b)) && slices.Equal(a.Self.IPv4, b.Self.IPv4) &&
		slices.Equal(a.Self.IPv6, b.Self.IPv6) && a.Self.CheckInterval == b.Self.CheckInterval &&
		reflect.DeepEqual(a.DNSBL, b.DNSBL)
}

// listedZones returns the blocklist zones of the enabled providers: our
// own addresses are checked whenever one names a zone, so that check and
// the alerts show a listing even where no route depends on it.
func listedZones(cfg *config.Config) []string {
	var zones []string
	for _, p := range cfg.Providers {
		if !p.Enabled {
			continue
		}
		for _, z := range p.Zones {
			if !slices.Contains(zones, z) {
				zones = append(zones, z)
			}
		}
	}
	slices.Sort(zones)
	return zones
}

// run starts the background work of g: the blocklist monitor (unless g
// took it over running from the generation it replaces) and the learner.
func (s *Server) run(g *Generation) {
	if g.monitor != nil && g.monitorStop == nil {
		ctx, cancel := context.WithCancel(context.Background())
		g.monitorStop, g.monitorDone = cancel, make(chan struct{})
		go func() { defer close(g.monitorDone); g.monitor.Run(ctx) }()
	}
	if s.store == nil || !g.cfg.Learn.Enabled {
		return
	}
	cfg, cls, engine := g.cfg, g.classifier, g.engine
	l := learn.NewLearner(learn.Options{
		Source: cfg.Learn.Source, LogFile: cfg.Learn.LogFile, BlockTTL: cfg.Learn.BlockTTL.Duration,
		Requeue: cfg.Learn.Requeue, Postsuper: cfg.Learn.Postsuper, PostfixConfig: cfg.Learn.PostfixConfig,
		ProviderOf: func(host string, addr netip.Addr) string { return providerOf(engine, host, addr) },
		SaveEvery:  10 * time.Second, SkipHosts: nexthopHosts(cfg.Transports.Relay),
		OnBlock:    func(b block.Block, fresh bool) { s.alerts.Notify(learn.AlertEvent(b, fresh)) },
		OnOwnFault: func(f learn.OwnFault) { s.alerts.NotifyOnce(f.Key(), learn.OwnFaultEvent(f)) },
		OnDelivery: s.delivered(cls),
	}, cls, s.store, s.log.Named("learn"))
	ctx, cancel := context.WithCancel(context.Background())
	g.learnerStop, g.learned = cancel, make(chan struct{})
	go func() {
		defer close(g.learned)
		if err := l.Run(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("learning from the delivery log stopped", zap.Error(err))
		}
	}()
}

// halt stops what g runs, waiting for the monitor and for the learner to
// save until ctx ends.
func (s *Server) halt(ctx context.Context, g *Generation) {
	if g.monitorStop != nil {
		g.monitorStop()
		select {
		case <-g.monitorDone:
		case <-ctx.Done():
			s.log.Warn("the blocklist self-check did not stop in time")
		}
	}
	if g.learnerStop == nil {
		return
	}
	g.learnerStop()
	select {
	case <-g.learned:
	case <-ctx.Done():
		s.log.Warn("the learner did not stop in time; its last changes may be lost")
	}
}

// providerOf names the provider of a host that refused us, by its name or
// the network of addr, as routing recognises a destination's provider.
func providerOf(e *route.Engine, host string, addr netip.Addr) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if m := e.Classifier().OfHost(ctx, host, addr); m.Provider != nil {
		return m.Provider.Name
	}
	return ""
}

// statusFilter is the delivery status filter of cfg: nil (every status
// unchanged) in a dry run, where no route around a block exists.
func statusFilter(cfg *config.Config, cls *learn.Classifier) *learn.StatusFilter {
	if cfg.Transports.Relay == "" {
		return nil
	}
	return learn.NewStatusFilter(cls, true, cfg.Transports.IPv4 != "", nexthopHosts(cfg.Transports.Relay))
}

// nexthopHosts returns the hosts of a transport's nexthops
// ("relay:[mx03.example.net]:587" -> "mx03.example.net:587"): refusals
// from our own relay say nothing about our direct IP.
func nexthopHosts(transport string) []string {
	_, next, ok := strings.Cut(transport, ":")
	if !ok {
		return nil
	}
	var hosts []string
	for _, h := range strings.FieldsFunc(next, func(r rune) bool { return r == ',' || r == ' ' }) {
		if i := strings.IndexByte(h, ']'); strings.HasPrefix(h, "[") && i > 0 {
			h = h[1:i] + h[i+1:] // [host]:port -> host:port
		}
		if h != "" {
			hosts = append(hosts, strings.ToLower(h))
		}
	}
	return hosts
}
