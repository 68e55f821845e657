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
	httppprof "net/http/pprof"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/connserver"
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

// Serve starts serving reg's metrics at http://addr/metrics, and with
// pprof Go's profiles at http://addr/debug/pprof/; addr "" does nothing
// and returns nil.
func Serve(addr string, reg *prometheus.Registry, pprof bool, log *zap.Logger) (*Server, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := listen.Listen(addr, 0o660)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if pprof {
		mux.HandleFunc("/debug/pprof/", httppprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", httppprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", httppprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", httppprof.Trace)
	}
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint stopped", zap.Error(err))
		}
	}()
	log.Info("metrics", zap.String("listen", addr), zap.Bool("pprof", pprof))
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

// Lookups registers the DNS counters, each label with one meaning:
// PREFIX_dns_cache_total{result="hit|miss"} (every lookup is one of the
// two), PREFIX_dns_stale_total (answers served stale because every
// nameserver failed, RFC 8767), PREFIX_dns_upstream_total{result="answer|error"}
// (queries sent to a nameserver: answered, NOERROR or NXDOMAIN, or not),
// PREFIX_dns_failures_total (lookups that ended without an answer: every
// nameserver failed, or the caller's deadline passed) and
// PREFIX_dns_cache_entries.
func Lookups(reg *prometheus.Registry, prefix string, stats func() lookup.Stats) {
	reg.MustRegister(&lookupCollector{stats: stats,
		cache: prometheus.NewDesc(prefix+"_dns_cache_total",
			"DNS lookups by cache outcome: hit (answered from the cache) or miss (asked upstream, or joined a query in flight).", []string{"result"}, nil),
		stale: prometheus.NewDesc(prefix+"_dns_stale_total",
			"Stale cached answers served because every nameserver failed (RFC 8767).", nil, nil),
		upstream: prometheus.NewDesc(prefix+"_dns_upstream_total",
			"Queries sent to a nameserver by outcome: answer (NOERROR or NXDOMAIN) or error (timeout, network error, other rcode).", []string{"result"}, nil),
		failures: prometheus.NewDesc(prefix+"_dns_failures_total",
			"Lookups that ended without an answer: every nameserver failed, or the caller's deadline passed.", nil, nil),
		entries: prometheus.NewDesc(prefix+"_dns_cache_entries", "Entries in the DNS cache.", nil, nil)})
}

type lookupCollector struct {
	stats                                     func() lookup.Stats // of the resolver in use: a reload may replace it
	cache, stale, upstream, failures, entries *prometheus.Desc
}

func (l *lookupCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{l.cache, l.stale, l.upstream, l.failures, l.entries} {
		ch <- d
	}
}

func (l *lookupCollector) Collect(ch chan<- prometheus.Metric) {
	st := l.stats()
	counter := func(d *prometheus.Desc, n uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(n), labels...)
	}
	counter(l.cache, st.Hits, "hit")
	counter(l.cache, st.Misses, "miss")
	counter(l.stale, st.Stale)
	counter(l.upstream, st.Answered, "answer")
	counter(l.upstream, st.UpstreamErrors, "error")
	counter(l.failures, st.Errors)
	ch <- prometheus.MustNewConstMetric(l.entries, prometheus.GaugeValue, float64(st.Entries))
}

// Listener is one protocol listener's counters, by its name.
type Listener struct {
	Name  string
	Stats *connserver.Stats
}

// Connections registers the counters of the connection servers that
// listeners returns at each scrape, labelled by listener:
// PREFIX_connections_accepted_total, _open, _refused_total (the limit was
// reached and no connection was idle), _evicted_total (an idle one was
// closed to make room), PREFIX_requests_total, _malformed_requests_total,
// _panics_total and _accept_errors_total.
func Connections(reg *prometheus.Registry, prefix string, listeners func() []Listener) {
	type metric struct {
		desc *prometheus.Desc
		kind prometheus.ValueType
		v    func(*connserver.Stats) int64
	}
	var ms []metric
	var descs []*prometheus.Desc
	for _, m := range []struct {
		name, help string
		kind       prometheus.ValueType
		v          func(*connserver.Stats) int64
	}{
		{"connections_accepted_total", "Connections accepted.", prometheus.CounterValue, func(s *connserver.Stats) int64 { return s.Accepted.Load() }},
		{"connections_open", "Connections open now.", prometheus.GaugeValue, func(s *connserver.Stats) int64 { return s.Open.Load() }},
		{"connections_refused_total", "Connections closed at once: the limit was reached and none was idle.", prometheus.CounterValue, func(s *connserver.Stats) int64 { return s.Refused.Load() }},
		{"connections_evicted_total", "Idle connections closed to make room for a new one.", prometheus.CounterValue, func(s *connserver.Stats) int64 { return s.Evicted.Load() }},
		{"requests_total", "Requests read.", prometheus.CounterValue, func(s *connserver.Stats) int64 { return s.Requests.Load() }},
		{"malformed_requests_total", "Requests that broke the protocol or the size limit (the connection was closed).", prometheus.CounterValue, func(s *connserver.Stats) int64 { return s.Malformed.Load() }},
		{"panics_total", "Recovered panics of a request handler or session.", prometheus.CounterValue, func(s *connserver.Stats) int64 { return s.Panics.Load() }},
		{"accept_errors_total", "Failed accepts (retried after a pause).", prometheus.CounterValue, func(s *connserver.Stats) int64 { return s.AcceptErrors.Load() }},
	} {
		d := prometheus.NewDesc(prefix+"_"+m.name, m.help, []string{"listener"}, nil)
		ms = append(ms, metric{d, m.kind, m.v})
		descs = append(descs, d)
	}
	reg.MustRegister(Collector{Descs: descs, Fn: func(ch chan<- prometheus.Metric) {
		for _, l := range listeners() {
			for _, m := range ms {
				ch <- prometheus.MustNewConstMetric(m.desc, m.kind, float64(m.v(l.Stats)), l.Name)
			}
		}
	}})
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
