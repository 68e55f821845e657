package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/metrics"
	"github.com/mxdetour/mxdetour/milter/filter"
)

// serveMetrics starts the Prometheus endpoint when [metrics] milter_listen
// is set: messages signed and not, rejects by reason, internal errors.
func serveMetrics(addr string, f *filter.Filter, log *zap.Logger) (*metrics.Server, error) {
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
		{"mxdetour_milter_rejected_country_total", "Clients refused for their country.", st.RejectedCountry.Load},
		{"mxdetour_milter_errors_total", "Internal errors (the message was accepted unsigned or tempfailed).", st.Errors.Load},
		{"mxdetour_milter_panics_total", "Recovered panics.", st.Panics.Load},
	} {
		metrics.Counter(reg, c.name, c.help, func() float64 { return float64(c.v()) })
	}
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mxdetour_milter_message_seconds",
		Help: "Time from MAIL FROM to the end of message, signing included.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)})
	reg.MustRegister(latency)
	f.Observe(func(took time.Duration) { latency.Observe(took.Seconds()) })
	return metrics.Serve(addr, reg, log.Named("metrics"))
}
