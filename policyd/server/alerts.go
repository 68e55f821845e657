package server

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/mxdetour/mxdetour/internal/alert"
	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/dnsbl"
)

// alertOptions maps [alerts].
func alertOptions(cfg *config.Config) alert.Options {
	a := cfg.Alerts
	return alert.Options{MailTo: a.MailTo, From: a.From, Sendmail: a.Sendmail, WebhookURL: a.WebhookURL,
		Interval: a.Interval.Duration, Daemon: "mxdetour-policyd"}
}

// listingChanged tells the postmaster that one of our addresses became
// listed or clean, and which destinations change route because of it.
func (s *Server) listingChanged(r dnsbl.Result) {
	g := s.describing()
	if g == nil {
		return
	}
	fields := map[string]string{"address": r.Addr.String(), "zone": r.Zone}
	kind, summary := "delisted", fmt.Sprintf("our address %s is no longer listed on %s", r.Addr, r.Zone)
	if r.State == dnsbl.Listed {
		kind, summary = "listed", fmt.Sprintf("our address %s is listed on %s", r.Addr, r.Zone)
		fields["reason"] = r.Reason
	}
	if routes := listingRoutes(g.cfg, r.Zone); routes != "" {
		fields["routes"] = routes
	}
	s.alerts.Notify(alert.Event{Kind: kind, Summary: summary, Fields: fields})
}

// zoneChanged tells the postmaster that a blocklist zone's answers about
// our addresses became unknown (it fails its RFC 5782 test points, answers
// an error code, or does not answer) and why, or are known again. Routes do
// not change because of it (dnsbl.Monitor).
func (s *Server) zoneChanged(z dnsbl.ZoneHealth) {
	g := s.describing()
	if g == nil {
		return
	}
	fields := map[string]string{"zone": z.Zone}
	kind, summary := "blocklist-known", fmt.Sprintf("blocklist %s answers its test points again: our listings on it are known", z.Zone)
	if !z.OK() {
		kind, summary = "blocklist-unknown", fmt.Sprintf("our listings on %s are unknown: %s", z.Zone, z.Why())
		fields["cause"], fields["detail"] = string(z.Cause), z.Err.Error()
		fields["effect"] = "no route changes because of it: an address last seen listed stays listed, one never checked counts as not listed"
	}
	if routes := listingRoutes(g.cfg, z.Zone); routes != "" {
		fields["routes"] = routes
	}
	s.alerts.Notify(alert.Event{Kind: kind, Summary: summary, Fields: fields})
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
