// Package metrics serves Prometheus metrics for both daemons on an HTTP
// listener of its own (off by default; loopback in the examples). Most
// values are read from counters the parts keep anyway, at scrape time, so
// the request path pays nothing for them. Every registry carries the Go
// runtime and process metrics (go_goroutines,
// process_resident_memory_bytes, ...) and mxdetour_build_info, so a leak
// or a restart shows on the same dashboard as the decisions.
package metrics

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/listen"
	"github.com/mxdetour/mxdetour/internal/lookup"
)

// NewRegistry returns the registry a daemon serves: the Go runtime and
// process collectors and mxdetour_build_info{version,goversion} (always 1)
// are registered on it; the daemon adds its own metrics.
func NewRegistry(version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "mxdetour_build_info",
		Help:        "Always 1; the labels say which build is running.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	info.Set(1)
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		info,
	)
	return reg
}

// Server is a running metrics endpoint.
type Server struct{ srv *http.Server }

// Serve starts serving reg's metrics at http://addr/metrics; addr "" does
// nothing and returns nil.
func Serve(addr string, reg *prometheus.Registry, log *zap.Logger) (*Server, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := listen.Listen(addr, 0o660)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint stopped", zap.Error(err))
		}
	}()
	log.Info("metrics", zap.String("listen", addr))
	return s, nil
}

// Close stops the endpoint.
func (s *Server) Close() {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
}

// Counter registers a counter read from f at scrape time.
func Counter(reg *prometheus.Registry, name, help string, f func() float64) {
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
}

// Gauge registers a gauge read from f at scrape time.
func Gauge(reg *prometheus.Registry, name, help string, f func() float64) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// Lookups registers the DNS cache counters.
func Lookups(reg *prometheus.Registry, prefix string, stats func() lookup.Stats) {
	reg.MustRegister(&lookupCollector{stats: stats, desc: prometheus.NewDesc(prefix+"_dns_lookups_total",
		"DNS lookups by outcome: hit and miss of the cache, upstream queries, errors, stale answers served.", []string{"result"}, nil),
		entries: prometheus.NewDesc(prefix+"_dns_cache_entries", "Entries in the DNS cache.", nil, nil)})
}

type lookupCollector struct {
	stats         func() lookup.Stats // of the resolver in use: a reload may replace it
	desc, entries *prometheus.Desc
}

func (l *lookupCollector) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc; ch <- l.entries }

func (l *lookupCollector) Collect(ch chan<- prometheus.Metric) {
	st := l.stats()
	for _, v := range []struct {
		label string
		n     uint64
	}{{"hit", st.Hits}, {"miss", st.Misses}, {"upstream", st.Upstream}, {"error", st.Errors}, {"stale", st.Stale}} {
		ch <- prometheus.MustNewConstMetric(l.desc, prometheus.CounterValue, float64(v.n), v.label)
	}
	ch <- prometheus.MustNewConstMetric(l.entries, prometheus.GaugeValue, float64(st.Entries))
}

// Collector builds a collector from a function producing const metrics.
type Collector struct {
	Descs []*prometheus.Desc
	Fn    func(ch chan<- prometheus.Metric)
}

// Describe implements prometheus.Collector.
func (c Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.Descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c Collector) Collect(ch chan<- prometheus.Metric) { c.Fn(ch) }
