package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/metrics"
	"github.com/mxdetour/mxdetour/milter/dkim"
	"github.com/mxdetour/mxdetour/milter/filter"
)

// serveMetrics starts the Prometheus endpoint when [metrics] milter_listen
// is set: messages signed and not, rejects by reason, internal errors,
// milter sessions (sessions: go-milter's count, the only connection
// counter it exposes), and what the running state was built without (cur:
// keys, country source).
func serveMetrics(addr string, pprof bool, f *filter.Filter, sessions func() uint64, cur func() *Built, version string, log *zap.Logger) (*metrics.Server, error) {
	if addr == "" {
		return nil, nil
	}
	reg := metrics.NewRegistry(version)
	st := f.Stats()
	for _, c := range []struct {
		name, help string
		v          func() uint64
	}{
		{"mxdetour_milter_messages_total", "Messages seen (MAIL FROM).", st.Messages.Load},
		{"mxdetour_milter_signed_total", "Messages DKIM-signed.", st.Signed.Load},
		{"mxdetour_milter_not_signed_total", "Messages accepted without a signature (not eligible, no key, or an error).", st.NotSigned.Load},
		{"mxdetour_milter_rejected_reserved_total", "Recipients refused for a reserved domain.", st.RejectedReserved.Load},
		{"mxdetour_milter_rejected_country_total", "Clients refused by a country rule ([milter.geo]: country, AS or network).", st.RejectedCountry.Load},
		{"mxdetour_milter_geo_logged_total", "Clients a log-only country rule would have refused (accepted).", st.LoggedCountry.Load},
		{"mxdetour_milter_errors_total", "Internal errors (the message was accepted unsigned or tempfailed).", st.Errors.Load},
		{"mxdetour_milter_panics_total", "Recovered panics.", st.Panics.Load},
		{"mxdetour_milter_local_counted_total", "Messages of local accounts (sendmail, pickup) counted by policyd's limits and let through.", st.LocalCounted.Load},
		{"mxdetour_milter_local_held_total", "Messages of local accounts held (quarantined) over a limit.", st.LocalHeld.Load},
		{"mxdetour_milter_local_uncounted_total", "Messages from cleanup gone on uncounted: no (or a forged) header_checks header, requeued by postsuper -r, or policyd not answering within 1s.", st.LocalUncounted.Load},
		{"mxdetour_milter_sessions_total", "Milter sessions Postfix opened and negotiated (one per smtpd or cleanup connection).", sessions},
	} {
		metrics.Counter(reg, c.name, c.help, func() float64 { return float64(c.v()) })
	}
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mxdetour_milter_message_seconds",
		Help: "Time from MAIL FROM to the end of message, signing included.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)})
	reg.MustRegister(latency)
	f.Observe(func(took time.Duration) { latency.Observe(took.Seconds()) })
	reg.MustRegister(stateCollector(cur))
	return metrics.Serve(addr, reg, pprof, log.Named("metrics"))
}

var (
	keysDesc = prometheus.NewDesc("mxdetour_milter_dkim_keys",
		"Configured DKIM keys by state: loaded (signs), kept (its file fails since a reload; the key loaded before still signs), failed (does not sign).",
		[]string{"state"}, nil)
	keyDesc = prometheus.NewDesc("mxdetour_milter_dkim_key",
		"Configured DKIM keys per domain, selector and state (loaded, kept, failed), normally 1: alert on state!=\"loaded\".",
		[]string{"domain", "selector", "state"}, nil)
	geoDesc = prometheus.NewDesc("mxdetour_milter_country_source",
		"1 for the state of the country data: none (not configured), loaded, kept (the new source failed at reload), failed (no country block).",
		[]string{"state"}, nil)
	geoAgeDesc = prometheus.NewDesc("mxdetour_milter_geo_data_age_seconds",
		"Age of the country data in use (mmdb build epoch, delegated file date); absent when unknown (dns source, none).",
		nil, nil)
	geoMaxAgeDesc = prometheus.NewDesc("mxdetour_milter_geo_data_max_age_seconds",
		"milter.geo.max_age (0 = never stale): alert on mxdetour_milter_geo_data_age_seconds above it, or on stale=1.",
		nil, nil)
	geoStaleDesc = prometheus.NewDesc("mxdetour_milter_geo_data_stale",
		"1 when the country data is older than milter.geo.max_age, else 0; absent when its age is unknown.",
		nil, nil)
)

// stateCollector reads the state in use at each scrape, so a reload
// leaves no series behind for keys no longer configured.
func stateCollector(cur func() *Built) prometheus.Collector {
	return metrics.Collector{Descs: []*prometheus.Desc{keysDesc, keyDesc, geoDesc, geoAgeDesc, geoMaxAgeDesc, geoStaleDesc}, Fn: func(ch chan<- prometheus.Metric) {
		b := cur()
		n := map[dkim.KeyState]int{dkim.Loaded: 0, dkim.Kept: 0, dkim.Failed: 0}
		type series struct{ domain, selector, state string }
		per := map[series]int{} // a row repeated in the file would repeat a series
		for _, k := range b.st.Keys.Status() {
			n[k.State]++
			per[series{k.Domain, k.Selector, string(k.State)}]++
		}
		for s, v := range per {
			ch <- prometheus.MustNewConstMetric(keyDesc, prometheus.GaugeValue, float64(v), s.domain, s.selector, s.state)
		}
		for state, v := range n {
			ch <- prometheus.MustNewConstMetric(keysDesc, prometheus.GaugeValue, float64(v), string(state))
		}
		ch <- prometheus.MustNewConstMetric(geoDesc, prometheus.GaugeValue, 1, string(b.geo))
		maxAge := b.cfg.Milter.Geo.MaxAge.Duration
		ch <- prometheus.MustNewConstMetric(geoMaxAgeDesc, prometheus.GaugeValue, maxAge.Seconds())
		if age, stale := b.st.Geo.Stale(maxAge, time.Now()); !b.st.Geo.Built().IsZero() {
			ch <- prometheus.MustNewConstMetric(geoAgeDesc, prometheus.GaugeValue, age.Seconds())
			v := 0.0
			if stale {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(geoStaleDesc, prometheus.GaugeValue, v)
		}
	}}
}
