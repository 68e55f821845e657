package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/alert"
	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/internal/dnsbl"
	"github.com/mxdetour/mxdetour/internal/logging"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/metrics"
	"github.com/mxdetour/mxdetour/internal/postfix"
	"github.com/mxdetour/mxdetour/internal/setup"
	"github.com/mxdetour/mxdetour/policyd/block"
	"github.com/mxdetour/mxdetour/policyd/fleet"
	"github.com/mxdetour/mxdetour/policyd/learn"
	"github.com/mxdetour/mxdetour/policyd/limits"
	"github.com/mxdetour/mxdetour/policyd/policy"
	"github.com/mxdetour/mxdetour/policyd/respond"
	"github.com/mxdetour/mxdetour/policyd/route"
	"github.com/mxdetour/mxdetour/policyd/socketmap"
)

// policyd is mxdetour-policyd's running parts. What a configuration
// determines (resolver, blocklist monitor, engine, learner) is a runtime,
// built whole and swapped in at once by a reload; what must survive a
// reload is owned here and never replaced: the learned state, the alerter
// with its pending events, the responders (and so the counters), the
// listeners and the metrics endpoint.
type policyd struct {
	log     *zap.Logger
	store   *learn.Store // nil when learning is off at start
	alerts  *alert.Alerter
	resp    *respond.Responder
	probe   *respond.Responder // the watchdog's: same engine, no log lines, no counters
	metrics *metrics.Server
	cancel  context.CancelFunc // ends the alerter
	fleet   *fleet.Fleet       // [fleet]: nil without redis_url; lives across reloads like store

	listeners atomic.Pointer[[]metrics.Listener] // the protocol servers' counters, for metrics

	limiter *limits.Limiter // outbound limits: counters live across reloads (holds.go)
	// limited is limiter for the learner's goroutines, which start before it.
	limited   atomic.Pointer[limits.Limiter]
	limitsGeo *limitsGeo
	counters  *fleet.Counters // with [fleet]: the limits' counters in Redis; nil without
	// countersConn is the counters' own connection, when there is no
	// fleet (learning off) to share one with.
	countersConn *fleet.Conn

	mu sync.Mutex // serialises reloads and stop
	rt atomic.Pointer[runtime]
}

// runtime is everything one configuration determines.
type runtime struct {
	cfg      *config.Config
	resolver *lookup.Client
	monitor  *dnsbl.Monitor // nil when no provider names a zone
	engine   *route.Engine
	// classifier of cfg's learn patterns: the learner's and the delivery
	// status filter's, compiled once.
	classifier *learn.Classifier
	status     *learn.StatusFilter // nil in a dry run

	monitorStop context.CancelFunc // nil when the monitor is not ours to stop (shared) or absent
	learnerStop context.CancelFunc
	learned     chan struct{} // closed when the learner has stopped (and saved); nil without one
}

func (d *policyd) runtime() *runtime { return d.rt.Load() }

// parts builds the decision side (resolver, listings, learned blocks,
// engine) shared by the daemon and the check command; nothing runs yet.
func parts(cfg *config.Config, log *zap.Logger) (*policyd, error) {
	d := &policyd{log: log}
	if cfg.Learn.Enabled {
		var err error
		if d.store, err = learn.OpenStore(cfg.Learn.StateFile, log.Named("learn")); err != nil {
			return nil, fmt.Errorf("learn: %w", err)
		}
	}
	rt, err := d.build(cfg, nil)
	if err != nil {
		return nil, err
	}
	d.rt.Store(rt)
	return d, nil
}

// build makes the runtime of cfg, reusing from old (the running one, or
// nil) what cfg does not change: the resolver keeps its cache and the
// monitor its last check when their settings are the same.
func (d *policyd) build(cfg *config.Config, old *runtime) (*runtime, error) {
	rt := &runtime{cfg: cfg}
	cls, err := learn.NewClassifier(cfg.Learn.Patterns, cfg.Learn.IgnorePatterns)
	if err != nil {
		return nil, fmt.Errorf("[learn]: %w", err) // checkDeps refused it already
	}
	rt.classifier, rt.status = cls, statusFilter(cfg, cls)
	if old != nil && reflect.DeepEqual(setup.Lookup(old.cfg.DNS), setup.Lookup(cfg.DNS)) {
		rt.resolver = old.resolver
	} else {
		var err error
		if rt.resolver, err = lookup.New(setup.Lookup(cfg.DNS), d.log.Named("lookup")); err != nil {
			return nil, fmt.Errorf("dns: %w", err)
		}
	}
	if mc, ok := d.monitorConfig(cfg); ok {
		if old != nil && old.monitor != nil && rt.resolver == old.resolver && sameMonitor(old.cfg, cfg) {
			rt.monitor = old.monitor
		} else {
			r, err := lookup.New(selfCheckLookup(cfg), d.log.Named("lookup"))
			if err != nil {
				return nil, fmt.Errorf("dns: %w", err)
			}
			rt.monitor = dnsbl.NewMonitor(r, mc, d.log.Named("dnsbl"))
			if old != nil && old.monitor != nil {
				rt.monitor.Carry(old.monitor) // routes by what it knew, alerts only news
			}
		}
	}
	var listings route.Listings
	if rt.monitor != nil {
		listings = rt.monitor
	}
	var blocks route.Blocks
	if d.store != nil && cfg.Learn.Enabled {
		blocks = d.store
	}
	rt.engine = route.New(d.routeOptions(cfg), rt.resolver, listings, blocks)
	return rt, nil
}

// routeOptions are the decision's options of cfg, with the domains
// Postfix delivers itself added to [domains] local when from_postfix is
// on: mail to root@ our own host name must never be routed, nor deferred
// while DNS fails. Without Postfix (a developer's machine) there is
// nothing to add.
func (d *policyd) routeOptions(cfg *config.Config) route.Options {
	o := setup.Route(cfg)
	if !cfg.Domains.FromPostfix {
		return o
	}
	doms, skipped, err := postfix.OwnDomains(context.Background(), cfg.Learn.PostfixConfig)
	if errors.Is(err, postfix.ErrNotInstalled) {
		d.log.Debug("Postfix's own domains not read: postconf not found")
		return o
	}
	if err != nil {
		d.log.Error("Postfix's own domains not read; only [domains] local is never routed", zap.Error(err))
		return o
	}
	for _, e := range skipped {
		d.log.Warn("some of Postfix's own domains cannot be listed; name them in [domains] local", zap.Error(e))
	}
	o.Local = slices.Concat(o.Local, doms)
	d.log.Info("Postfix's own domains are never routed", zap.Strings("domains", doms))
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
func (d *policyd) monitorConfig(cfg *config.Config) (dnsbl.MonitorConfig, bool) {
	zones := listedZones(cfg)
	return dnsbl.MonitorConfig{
		IPv4: cfg.Self.IPv4, IPv6: cfg.Self.IPv6, Zones: zones,
		ErrorCodes: cfg.DNSBL.ErrorCodes, ZoneErrorCodes: cfg.DNSBL.ZoneErrorCodes,
		Interval: cfg.Self.CheckInterval.Duration, OnChange: d.listingChanged, OnZoneChange: d.zoneChanged,
	}, len(zones) > 0
}

func sameMonitor(a, b *config.Config) bool {
	return slices.Equal(listedZones(a), listedZones(b)) && slices.Equal(a.Self.IPv4, b.Self.IPv4) &&
		slices.Equal(a.Self.IPv6, b.Self.IPv6) && a.Self.CheckInterval == b.Self.CheckInterval &&
		reflect.DeepEqual(a.DNSBL, b.DNSBL)
}

// start builds the daemon and starts its background work; the runner
// opens the listeners.
func start(cfg *config.Config, log *zap.Logger) (*policyd, error) {
	d, err := parts(cfg, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.alerts = alert.New(alertOptions(cfg), log.Named("alert"))
	go d.alerts.Run(ctx)
	if d.fleet, err = startFleet(ctx, cfg, d.store, log.Named("fleet")); err != nil { // [fleet]
		cancel()
		return nil, err
	}
	rt := d.runtime()
	d.run(rt)
	d.resp = respond.New(rt.engine, cfg.Policyd.DecisionTimeout.Duration, log.Named("decide"))
	d.probe = respond.New(rt.engine, cfg.Policyd.DecisionTimeout.Duration, zap.NewNop())
	d.resp.SetStatusFilter(rt.status)
	err = d.startLimits(cfg) // outbound limits (holds.go)
	if err == nil {
		err = d.serveMetrics(cfg)
	}
	if err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		d.stop(ctx)
		return nil, err
	}
	return d, nil
}

// run starts the background work of rt: the blocklist monitor (unless rt
// took it over running from the runtime it replaces) and the learner.
func (d *policyd) run(rt *runtime) {
	if rt.monitor != nil && rt.monitorStop == nil {
		ctx, cancel := context.WithCancel(context.Background())
		rt.monitorStop = cancel
		go rt.monitor.Run(ctx)
	}
	if d.store == nil || !rt.cfg.Learn.Enabled {
		return
	}
	cfg := rt.cfg
	cls := rt.classifier
	engine := rt.engine
	l := learn.NewLearner(learn.Options{
		Source: cfg.Learn.Source, LogFile: cfg.Learn.LogFile, BlockTTL: cfg.Learn.BlockTTL.Duration,
		Requeue: cfg.Learn.Requeue, Postsuper: cfg.Learn.Postsuper, PostfixConfig: cfg.Learn.PostfixConfig,
		ProviderOf: func(host string, addr netip.Addr) string { return providerOf(engine, host, addr) },
		SaveEvery:  10 * time.Second, SkipHosts: nexthopHosts(cfg.Transports.Relay),
		OnBlock:    func(b block.Block, fresh bool) { d.alerts.Notify(learn.AlertEvent(b, fresh)) },
		OnOwnFault: func(f learn.OwnFault) { d.alerts.NotifyOnce(f.Key(), learn.OwnFaultEvent(f)) },
		OnDelivery: d.delivered(cls),
	}, cls, d.store, d.log.Named("learn"))
	ctx, cancel := context.WithCancel(context.Background())
	rt.learnerStop, rt.learned = cancel, make(chan struct{})
	go func() {
		defer close(rt.learned)
		if err := l.Run(ctx); err != nil && ctx.Err() == nil {
			d.log.Error("learning from the delivery log stopped", zap.Error(err))
		}
	}()
}

// halt stops what rt runs, waiting for the learner to save until ctx ends.
func (d *policyd) halt(ctx context.Context, rt *runtime) {
	if rt.monitorStop != nil {
		rt.monitorStop()
	}
	if rt.learnerStop == nil {
		return
	}
	rt.learnerStop()
	select {
	case <-rt.learned:
	case <-ctx.Done():
		d.log.Warn("the learner did not stop in time; its last changes may be lost")
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

// alertOptions maps [alerts].
func alertOptions(cfg *config.Config) alert.Options {
	a := cfg.Alerts
	return alert.Options{MailTo: a.MailTo, From: a.From, Sendmail: a.Sendmail, WebhookURL: a.WebhookURL,
		Interval: a.Interval.Duration, Daemon: "mxdetour-policyd"}
}

// listingChanged tells the postmaster that one of our addresses became
// listed or clean, and which destinations change route because of it.
func (d *policyd) listingChanged(r dnsbl.Result) {
	rt := d.runtime()
	if rt == nil {
		return
	}
	fields := map[string]string{"address": r.Addr.String(), "zone": r.Zone}
	kind, summary := "delisted", fmt.Sprintf("our address %s is no longer listed on %s", r.Addr, r.Zone)
	if r.State == dnsbl.Listed {
		kind, summary = "listed", fmt.Sprintf("our address %s is listed on %s", r.Addr, r.Zone)
		fields["reason"] = r.Reason
	}
	if routes := listingRoutes(rt.cfg, r.Zone); routes != "" {
		fields["routes"] = routes
	}
	d.alerts.Notify(alert.Event{Kind: kind, Summary: summary, Fields: fields})
}

// zoneChanged tells the postmaster that a blocklist zone's answers about
// our addresses became unknown (it fails its RFC 5782 test points, answers
// an error code, or does not answer) and why, or are known again. Routes do
// not change because of it (dnsbl.Monitor).
func (d *policyd) zoneChanged(z dnsbl.ZoneHealth) {
	rt := d.runtime()
	if rt == nil {
		return
	}
	fields := map[string]string{"zone": z.Zone}
	kind, summary := "blocklist-known", fmt.Sprintf("blocklist %s answers its test points again: our listings on it are known", z.Zone)
	if !z.OK() {
		kind, summary = "blocklist-unknown", fmt.Sprintf("our listings on %s are unknown: %s", z.Zone, z.Why())
		fields["cause"], fields["detail"] = string(z.Cause), z.Err.Error()
		fields["effect"] = "no route changes because of it: an address last seen listed stays listed, one never checked counts as not listed"
	}
	if routes := listingRoutes(rt.cfg, z.Zone); routes != "" {
		fields["routes"] = routes
	}
	d.alerts.Notify(alert.Event{Kind: kind, Summary: summary, Fields: fields})
}

// listingRoutes says, per provider using zone, what its destinations do
// while one of our addresses is listed there.
func listingRoutes(cfg *config.Config, zone string) string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(cfg.Providers)) {
		p := cfg.Providers[name]
		if !p.Enabled || !slices.Contains(p.Zones, zone) {
			continue
		}
		out = append(out, fmt.Sprintf("%s: route %s", name, p.Route))
	}
	return strings.Join(out, "; ")
}

// sockets are the daemon's two services, by their systemd names.
func (d *policyd) sockets() []daemon.Socket {
	p := d.runtime().cfg.Policyd
	mode, _ := strconv.ParseUint(p.SocketMode, 8, 32) // validated by config
	pol := policy.NewServer(d.resp, policy.Options{
		IdleTimeout: p.IdleTimeout.Duration, MaxRequestSize: p.MaxRequestSize, MaxConnections: p.MaxConnections,
	}, d.log.Named("policy"))
	smap := socketmap.NewServer(d.resp, socketmap.Options{
		IdleTimeout: p.IdleTimeout.Duration, MaxRequestSize: p.MaxRequestSize, MaxConnections: p.MaxConnections,
	}, d.log.Named("socketmap"))
	d.listeners.Store(&[]metrics.Listener{{Name: "policy", Stats: pol.Stats()}, {Name: "socketmap", Stats: smap.Stats()}})
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

// health is the watchdog's probe: one socketmap request through the
// responder and the engine that serve Postfix, answered before ctx ends.
func (d *policyd) health(ctx context.Context) error {
	r := d.probe.Lookup(ctx, "transport", probeAddress)
	if r.Status != "OK" || !strings.HasPrefix(r.Data, "error:5.1.2 ") {
		return fmt.Errorf("%s was answered %q, want OK error:5.1.2", probeAddress, r.String())
	}
	return nil
}

// reloadFrom reads the configuration again and swaps a runtime built from
// it in at once (SIGHUP); on an error the running one stays.
func (d *policyd) reloadFrom(ctx context.Context, path string, level zap.AtomicLevel) error {
	next, _, err := load(path)
	if err != nil {
		return err
	}
	if err := logging.SetLevel(level, next.Log.Level); err != nil {
		return err
	}
	return d.reload(ctx, next)
}

// reload builds the runtime of next beside the running one, swaps it in
// for every later request, then stops what the old one ran and no longer
// needs. Learned blocks are merged from the state file, never replaced.
// The end of ctx (the daemon stopping) cuts the new self-check short.
func (d *policyd) reload(ctx context.Context, next *config.Config) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.runtime()
	if changed := restartOnly(old.cfg, next); len(changed) > 0 {
		d.log.Warn("these settings change only on restart; the running values stay", zap.Strings("keys", changed))
	}
	if next.Learn.Enabled && d.store == nil {
		d.log.Warn("learn.enabled changes only on restart")
	}
	rt, err := d.build(next, old)
	if err != nil {
		return err
	}
	d.alerts.Configure(alertOptions(next)) // before the new self-check, which may have news
	if d.store != nil {
		if err := d.store.Reload(); err != nil {
			d.log.Error("reload: state file", zap.Error(err))
		}
	}
	if rt.monitor != nil && rt.monitor == old.monitor { // still checking: hand it over
		rt.monitorStop, old.monitorStop = old.monitorStop, nil
	}
	checkCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if rt.monitor != nil && rt.monitorStop == nil {
		rt.monitor.CheckNow(checkCtx) // a new self-check starts with what it knows, not blank
	}
	// Not cut short by a stop: the old learner saves its offset, and the
	// new one resumes there.
	haltCtx, cancelHalt := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelHalt()
	d.halt(haltCtx, old)
	d.run(rt)
	d.rt.Store(rt)
	d.resp.SetEngine(rt.engine)
	d.probe.SetEngine(rt.engine)
	d.resp.SetTimeout(next.Policyd.DecisionTimeout.Duration)
	d.resp.SetStatusFilter(rt.status)
	d.probe.SetTimeout(next.Policyd.DecisionTimeout.Duration)
	d.reloadLimits(next, rt) // outbound limits (holds.go)
	return nil
}

// restartOnly names the keys that differ between a and b and that only a
// restart applies: sockets, connection limits, the metrics endpoint, the
// log format and where learned state lives.
func restartOnly(a, b *config.Config) []string {
	return daemon.RestartOnly(
		daemon.Setting{Key: "policyd.policy_listen", Was: a.Policyd.PolicyListen, Now: b.Policyd.PolicyListen},
		daemon.Setting{Key: "policyd.socketmap_listen", Was: a.Policyd.SocketmapListen, Now: b.Policyd.SocketmapListen},
		daemon.Setting{Key: "policyd.socket_mode", Was: a.Policyd.SocketMode, Now: b.Policyd.SocketMode},
		daemon.Setting{Key: "policyd.idle_timeout", Was: a.Policyd.IdleTimeout, Now: b.Policyd.IdleTimeout},
		daemon.Setting{Key: "policyd.max_connections", Was: a.Policyd.MaxConnections, Now: b.Policyd.MaxConnections},
		daemon.Setting{Key: "policyd.max_request_size", Was: a.Policyd.MaxRequestSize, Now: b.Policyd.MaxRequestSize},
		daemon.Setting{Key: "metrics.policyd_listen", Was: a.Metrics.PolicydListen, Now: b.Metrics.PolicydListen},
		daemon.Setting{Key: "metrics.pprof", Was: fmt.Sprint(a.Metrics.Pprof), Now: fmt.Sprint(b.Metrics.Pprof)},
		daemon.Setting{Key: "log.format", Was: a.Log.Format, Now: b.Log.Format},
		daemon.Setting{Key: "learn.state_file", Was: a.Learn.StateFile, Now: b.Learn.StateFile},
		daemon.Setting{Key: "fleet", Was: a.Fleet, Now: b.Fleet},
	)
}

// stop ends the background work once the runner has drained the
// listeners, and saves learned state before ctx ends.
func (d *policyd) stop(ctx context.Context) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.metrics.Close()
	if rt := d.runtime(); rt != nil {
		d.halt(ctx, rt)
	}
	d.stopLimits() // saves the counters, before the alerter's last send
	// The alerter sends what is pending before we exit, or logs it as
	// unsent when the grace period ends first.
	d.alerts.Stop(ctx)
	if d.cancel != nil {
		d.cancel()
	}
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

// checkDeps validates what config.Validate cannot and the daemon cannot
// start without: the learn patterns, [fleet], and the country data of
// the compromise signal. A start refuses exactly what this refuses
// (start's own failures are these, as configError).
func checkDeps(cfg *config.Config) error {
	if _, err := learn.NewClassifier(cfg.Learn.Patterns, cfg.Learn.IgnorePatterns); err != nil {
		return fmt.Errorf("[learn]: %w", err)
	}
	if cfg.Compromise.Enabled {
		r, err := lookup.New(setup.Lookup(cfg.DNS), zap.NewNop()) // queries nothing until asked
		if err != nil {
			return fmt.Errorf("dns: %w", err)
		}
		g, err := openLimitsGeo(cfg, r, nil)
		if err != nil {
			return fmt.Errorf("[compromise] (its country data is [milter.geo]'s): %w", err)
		}
		if c, ok := g.source().(io.Closer); ok {
			c.Close()
		}
	}
	return checkFleet(cfg) // [fleet]
}

// checkStateFile checks where learned state is kept. -check-config
// fails on it; the daemon only says so loudly and runs, keeping what it
// learns in memory: routing must not stop because a directory is missing
// (the embedded defaults name /var/lib/mxdetour, which `make run` on a
// developer's machine lacks).
func checkStateFile(cfg *config.Config) error {
	if !cfg.Learn.Enabled {
		return nil
	}
	return learn.CheckStateFile(cfg.Learn.StateFile)
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
