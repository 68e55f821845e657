package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/internal/dnsbl"
	"github.com/mxdetour/mxdetour/internal/logging"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/metrics"
	"github.com/mxdetour/mxdetour/internal/setup"
	"github.com/mxdetour/mxdetour/policyd/learn"
	"github.com/mxdetour/mxdetour/policyd/policy"
	"github.com/mxdetour/mxdetour/policyd/respond"
	"github.com/mxdetour/mxdetour/policyd/route"
	"github.com/mxdetour/mxdetour/policyd/socketmap"
)

// policyd is mxdetour-policyd's running parts.
type policyd struct {
	cfg      *config.Config
	log      *zap.Logger
	resolver *lookup.Client
	monitor  *dnsbl.Monitor // nil when no provider routes "when-listed"
	store    *learn.Store   // nil when learning is off
	engine   *route.Engine
	resp     *respond.Responder
	probe    *respond.Responder // the watchdog's: same engine, no log lines, no counters
	cancel   context.CancelFunc
	learned  chan struct{} // closed when the learner has stopped (and saved)
	metrics  *metrics.Server
}

// parts builds the decision side (resolver, listings, learned blocks,
// engine) shared by the daemon and the check command.
func parts(cfg *config.Config, log *zap.Logger) (*policyd, error) {
	d := &policyd{cfg: cfg, log: log}
	var err error
	if d.resolver, err = lookup.New(setup.Lookup(cfg.DNS), log.Named("lookup")); err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	if zones := listedZones(cfg); len(zones) > 0 {
		d.monitor = dnsbl.NewMonitor(d.resolver, dnsbl.MonitorConfig{
			IPv4: cfg.Self.IPv4, IPv6: cfg.Self.IPv6, Zones: zones,
			ErrorCodes: cfg.DNSBL.ErrorCodes, ZoneErrorCodes: cfg.DNSBL.ZoneErrorCodes,
			Interval: cfg.Self.CheckInterval.Duration,
		}, log.Named("dnsbl"))
	}
	if cfg.Learn.Enabled {
		if d.store, err = learn.OpenStore(cfg.Learn.StateFile, log.Named("learn")); err != nil {
			return nil, fmt.Errorf("learn: %w", err)
		}
	}
	var listings route.Listings
	if d.monitor != nil {
		listings = d.monitor
	}
	var blocks route.Blocks
	if d.store != nil {
		blocks = d.store
	}
	d.engine = route.New(cfg, d.resolver, listings, blocks)
	return d, nil
}

// start builds the daemon and starts its background work; the runner
// opens the listeners.
func start(cfg *config.Config, log *zap.Logger) (*policyd, error) {
	if err := checkDeps(cfg); err != nil {
		return nil, configError{err}
	}
	d, err := parts(cfg, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	if d.monitor != nil {
		go d.monitor.Run(ctx)
	}
	if d.store != nil {
		cls, _ := learn.NewClassifier(cfg.Learn.Patterns, cfg.Learn.IgnorePatterns) // checked by checkDeps
		l := learn.NewLearner(learn.Options{
			LogFile: cfg.Learn.LogFile, BlockTTL: cfg.Learn.BlockTTL.Duration,
			Requeue: cfg.Learn.Requeue, Postsuper: cfg.Learn.Postsuper, PostfixConfig: cfg.Learn.PostfixConfig,
			ProviderOf: d.providerOf, SaveEvery: 10 * time.Second,
			SkipHosts: nexthopHosts(cfg.Transports.Relay),
		}, cls, d.store, log.Named("learn"))
		d.learned = make(chan struct{})
		go func() {
			defer close(d.learned)
			if err := l.Run(ctx); err != nil && ctx.Err() == nil {
				log.Error("learning from the delivery log stopped", zap.Error(err))
			}
		}()
	}
	d.resp = respond.New(d.engine, cfg.Policyd.DecisionTimeout.Duration, log.Named("decide"))
	d.probe = respond.New(d.engine, cfg.Policyd.DecisionTimeout.Duration, zap.NewNop())
	if err := d.serveMetrics(); err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		d.stop(ctx)
		return nil, err
	}
	return d, nil
}

func (d *policyd) providerOf(host string) string {
	if p := d.engine.Classifier().ByHost(host); p != nil {
		return p.Name
	}
	return ""
}

// sockets are the daemon's two services, by their systemd names.
func (d *policyd) sockets() []daemon.Socket {
	p := d.cfg.Policyd
	mode, _ := strconv.ParseUint(p.SocketMode, 8, 32) // validated by config
	return []daemon.Socket{
		{Name: "policy", Addr: p.PolicyListen, Mode: os.FileMode(mode), Server: policy.NewServer(d.resp, policy.Options{
			IdleTimeout: p.IdleTimeout.Duration, MaxRequestSize: p.MaxRequestSize, MaxConnections: p.MaxConnections,
		}, d.log.Named("policy"))},
		{Name: "socketmap", Addr: p.SocketmapListen, Mode: os.FileMode(mode), Server: socketmap.NewServer(d.resp, socketmap.Options{
			IdleTimeout: p.IdleTimeout.Duration, MaxRequestSize: p.MaxRequestSize, MaxConnections: p.MaxConnections,
		}, d.log.Named("socketmap"))},
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

// reloadFrom reads the configuration again and swaps it in (SIGHUP); on
// an error the running configuration stays.
func (d *policyd) reloadFrom(path string, level zap.AtomicLevel) error {
	next, _, err := config.LoadDefault(path)
	if err == nil {
		err = checkDeps(next)
	}
	if err != nil {
		return err
	}
	if err := logging.SetLevel(level, next.Log.Level); err != nil {
		return err
	}
	d.reload(next)
	return nil
}

// reload swaps in a new configuration. Listen addresses, [dns] and [self]
// are read at start only; a change there is logged as needing a restart.
func (d *policyd) reload(next *config.Config) {
	if next.Policyd.PolicyListen != d.cfg.Policyd.PolicyListen ||
		next.Policyd.SocketmapListen != d.cfg.Policyd.SocketmapListen ||
		!slices.Equal(next.DNS.Servers, d.cfg.DNS.Servers) ||
		!slices.Equal(listedZones(next), listedZones(d.cfg)) {
		d.log.Warn("listen addresses, [dns] servers and blocklist zones change only on restart")
	}
	d.engine.Swap(next)
	d.resp.SetTimeout(next.Policyd.DecisionTimeout.Duration)
	d.probe.SetTimeout(next.Policyd.DecisionTimeout.Duration)
	if d.store != nil {
		if err := d.store.Reload(); err != nil {
			d.log.Error("reload: state file", zap.Error(err))
		}
	}
	d.cfg = next
}

// stop ends the background work once the runner has drained the
// listeners, and saves learned state before ctx ends.
func (d *policyd) stop(ctx context.Context) {
	d.metrics.Close()
	if d.cancel != nil {
		d.cancel()
	}
	if d.learned != nil { // the learner saves what it learned as it ends
		select {
		case <-d.learned:
		case <-ctx.Done():
			d.log.Warn("the learner did not stop in time; its last changes may be lost")
		}
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

// checkDeps validates what config.Validate cannot: the learn patterns.
func checkDeps(cfg *config.Config) error {
	if _, err := learn.NewClassifier(cfg.Learn.Patterns, cfg.Learn.IgnorePatterns); err != nil {
		return fmt.Errorf("[learn]: %w", err)
	}
	return nil
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
