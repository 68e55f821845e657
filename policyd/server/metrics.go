package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/dnsbl"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/metrics"
	"github.com/mxdetour/mxdetour/policyd/route"
)

// serveMetrics starts the Prometheus endpoint when [metrics]
// policyd_listen is set: decisions by route and provider with their
// latency, DNS cache counters, our listings per address and zone and when
// each was last checked, whether each zone passes its test points, learned
// blocks, and the protocol servers' connection and request counters by
// listener.
func (s *Server) serveMetrics(cfg *config.Config) error {
	addr := cfg.Metrics.PolicydListen
	if addr == "" {
		return nil
	}
	reg := metrics.NewRegistry(s.version)
	decisions := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mxdetour_policyd_decisions_total",
		Help: "Decisions by route and provider."}, []string{"route", "provider", "reason"})
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mxdetour_policyd_decision_seconds",
		Help: "Time to decide.", Buckets: []float64{.00001, .00005, .0001, .0005, .001, .005, .01, .05, .1, .5, 1}})
	reg.MustRegister(decisions, latency)
	s.resp.Observe(func(dec route.Decision, took time.Duration) {
		decisions.WithLabelValues(string(dec.Route), dec.Provider, string(dec.Reason)).Inc()
		latency.Observe(took.Seconds())
	})
	metrics.Lookups(reg, "mxdetour_policyd", func() lookup.Stats { return s.Current().resolver.Stats() })
	metrics.Connections(reg, "mxdetour_policyd", func() []metrics.Listener {
		if l := s.listeners.Load(); l != nil {
			return *l
		}
		return nil
	})
	st := s.resp.Stats()
	metrics.Counter(reg, "mxdetour_policyd_deadline_answers_total", "Answers given as direct because DNS was slower than decision_timeout.", func() float64 { return float64(st.Deadline.Load()) })
	metrics.Counter(reg, "mxdetour_policyd_dry_run_total", "Decisions to relay answered as direct because no relay is configured.", func() float64 { return float64(st.DryRun.Load()) })
	if s.store != nil {
		metrics.Gauge(reg, "mxdetour_policyd_learned_blocks", "Blocks learned from the delivery log, not expired.", func() float64 { return float64(len(s.store.List(time.Now()))) })
	}
	{
		desc := prometheus.NewDesc("mxdetour_policyd_listed", "1 when our address is listed on the zone, 0 when clean, -1 when unknown "+
			"(the zone fails its test points, answers an error code, or does not answer; routes then go by the last known state).", []string{"addr", "zone"}, nil)
		checked := prometheus.NewDesc("mxdetour_policyd_last_blocklist_check_timestamp_seconds",
			"When our address was last checked on the zone (Unix time); alert when it falls behind [self] check_interval.", []string{"addr", "zone"}, nil)
		zone := prometheus.NewDesc("mxdetour_policyd_blocklist_zone_usable",
			"1 when the zone passes its RFC 5782 test points (127.0.0.2 listed, 127.0.0.1 not), 0 when its answers are unknown; cause says why.", []string{"zone", "cause"}, nil)
		reg.MustRegister(metrics.Collector{Descs: []*prometheus.Desc{desc, checked, zone}, Fn: func(ch chan<- prometheus.Metric) {
			m := s.Current().monitor
			if m == nil {
				return
			}
			for _, z := range m.Zones() {
				v := 0.0
				if z.OK() {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(zone, prometheus.GaugeValue, v, z.Zone, string(z.Cause))
			}
			for _, r := range m.Results() {
				v := map[dnsbl.State]float64{dnsbl.Listed: 1, dnsbl.Clean: 0, dnsbl.Unknown: -1}[r.State]
				ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, r.Addr.String(), r.Zone)
				if !r.Checked.IsZero() {
					ch <- prometheus.MustNewConstMetric(checked, prometheus.GaugeValue, float64(r.Checked.UnixNano())/1e9, r.Addr.String(), r.Zone)
				}
			}
		}})
	}
	if s.fleet != nil {
		metrics.Gauge(reg, "mxdetour_policyd_fleet_connected", "1 while the fleet's Redis answers and this host is in step, else 0.", func() float64 {
			if s.fleet.Connected() {
				return 1
			}
			return 0
		})
		metrics.Counter(reg, "mxdetour_policyd_fleet_received_total", "Blocks learned by other hosts that changed this host's store.", func() float64 { return float64(s.fleet.Received()) })
		metrics.Counter(reg, "mxdetour_policyd_fleet_publish_failures_total", "Blocks learned here that could not be shared at once (shared when Redis answers).", func() float64 { return float64(s.fleet.PublishFailures()) })
	}
	if s.counters != nil {
		metrics.Gauge(reg, "mxdetour_policyd_limits_counting_alone", "1 while the fleet's Redis does not answer and this host counts its limits alone, else 0.", func() float64 {
			if s.counters.Alone() {
				return 1
			}
			return 0
		})
	}
	srv, err := metrics.Serve(addr, reg, cfg.Metrics.Pprof, s.log.Named("metrics"))
	s.metrics = srv
	return err
}
