package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/dnsbl"
	"github.com/mxdetour/mxdetour/internal/listen"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/metrics"
	"github.com/mxdetour/mxdetour/internal/setup"
	"github.com/mxdetour/mxdetour/policyd/learn"
	"github.com/mxdetour/mxdetour/policyd/policy"
	"github.com/mxdetour/mxdetour/policyd/respond"
	"github.com/mxdetour/mxdetour/policyd/route"
	"github.com/mxdetour/mxdetour/policyd/socketmap"
)

// daemon is mxdetour-policyd's running parts.
type daemon struct {
	cfg      *config.Config
	log      *zap.Logger
	resolver *lookup.Client
	monitor  *dnsbl.Monitor // nil when no provider routes "when-listed"
	store    *learn.Store   // nil when learning is off
	engine   *route.Engine
	resp     *respond.Responder
	servers  []server
	cancel   context.CancelFunc
	fatal    chan error
	learned  chan struct{} // closed when the learner has stopped (and saved)
	metrics  *metrics.Server
}

// server is what policy.Server and socketmap.Server have in common.
type server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// parts builds the decision side (resolver, listings, learned blocks,
// engine) shared by the daemon and the check command.
func parts(cfg *config.Config, log *zap.Logger) (*daemon, error) {
	d := &daemon{cfg: cfg, log: log, fatal: make(chan error, 4)}
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

// start builds the daemon and starts its listeners and background work.
func start(cfg *config.Config, log *zap.Logger) (*daemon, error) {
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
	if err := d.serveMetrics(); err != nil {
		d.stop(time.Second)
		return nil, err
	}
	if err := d.listen(); err != nil {
		d.stop(time.Second)
		return nil, err
	}
	return d, nil
}

func (d *daemon) providerOf(host string) string {
	if p := d.engine.Classifier().ByHost(host); p != nil {
		return p.Name
	}
	return ""
}

func (d *daemon) listen() error {
	p := d.cfg.Policyd
	mode, _ := strconv.ParseUint(p.SocketMode, 8, 32) // validated by config
	if p.PolicyListen != "" {
		srv := policy.NewServer(d.resp, policy.Options{
			IdleTimeout: p.IdleTimeout.Duration, MaxRequestSize: p.MaxRequestSize,
			MaxConnections: p.MaxConnections,
		}, d.log.Named("policy"))
		if err := d.serve(srv, p.PolicyListen, os.FileMode(mode)); err != nil {
			return err
		}
	}
	if p.SocketmapListen != "" {
		srv := socketmap.NewServer(d.resp, socketmap.Options{
			IdleTimeout: p.IdleTimeout.Duration, MaxRequestSize: p.MaxRequestSize,
			MaxConnections: p.MaxConnections,
		}, d.log.Named("socketmap"))
		if err := d.serve(srv, p.SocketmapListen, os.FileMode(mode)); err != nil {
			return err
		}
	}
	return nil
}

func (d *daemon) serve(srv server, addr string, mode os.FileMode) error {
	ln, err := listen.Listen(addr, mode)
	if err != nil {
		return err
	}
	d.servers = append(d.servers, srv)
	go func() {
		if err := srv.Serve(ln); err != nil {
			d.fatal <- fmt.Errorf("serving %s: %w", addr, err)
		}
	}()
	return nil
}

// reload swaps in a new configuration. Listen addresses, [dns] and [self]
// are read at start only; a change there is logged as needing a restart.
func (d *daemon) reload(next *config.Config) {
	if next.Policyd.PolicyListen != d.cfg.Policyd.PolicyListen ||
		next.Policyd.SocketmapListen != d.cfg.Policyd.SocketmapListen ||
		!slices.Equal(next.DNS.Servers, d.cfg.DNS.Servers) ||
		!slices.Equal(listedZones(next), listedZones(d.cfg)) {
		d.log.Warn("listen addresses, [dns] servers and blocklist zones change only on restart")
	}
	d.engine.Swap(next)
	d.resp.SetTimeout(next.Policyd.DecisionTimeout.Duration)
	if d.store != nil {
		if err := d.store.Reload(); err != nil {
			d.log.Error("reload: state file", zap.Error(err))
		}
	}
	d.cfg = next
}

// stop drains the listeners: no new connections, requests in flight are
// answered, then background work ends and learned state is saved.
func (d *daemon) stop(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	for _, s := range d.servers {
		if err := s.Shutdown(ctx); err != nil {
			d.log.Warn("shutdown", zap.Error(err))
		}
	}
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
