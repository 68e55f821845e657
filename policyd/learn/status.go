package learn

import (
	"net/netip"
	"strings"
)

// StatusFilter answers Postfix's smtp_delivery_status_filter (postconf(5);
// Postfix 3.0 and later). The smtp client hands the table every delivery
// status as "STATUS REASON", e.g.
//
//	5.7.1 host mx.example.net[192.0.2.1] said: 554 5.7.1 Service unavailable; Client host [198.51.100.2] blocked using zen.spamhaus.org (in reply to RCPT TO command)
//
// and uses the table's result instead, when it has one of the same kind
// (a success for a success, 4.x.x or 5.x.x for a failure: dsn_filter.c
// keeps the original otherwise). No result, or a table that fails, keeps
// the original status: mxdetour away changes nothing.
//
// A permanent refusal that the classifier calls a block of our address or
// network comes back as the same refusal made temporary (4.x.x, same
// text): the message waits in the queue instead of bouncing to its
// sender, the learner learns the block from the deferral, and the next
// attempt takes the route around it. That needs a route around it: a
// relay, or for a block of our IPv6 address only, the IPv4 transport.
// Refusals from our own relay say nothing about our direct address and
// are left as they are.
type StatusFilter struct {
	c         *Classifier
	relay     bool     // a relay transport is configured
	ipv4      bool     // an IPv4-only transport is configured
	skipHosts []string // our own relay: "host" or "host:port"
}

// NewStatusFilter returns the filter of c for a site with (or without) a
// relay and an IPv4 transport; skipHosts are the relay's hosts.
func NewStatusFilter(c *Classifier, relay, ipv4 bool, skipHosts []string) *StatusFilter {
	return &StatusFilter{c: c, relay: relay, ipv4: ipv4, skipHosts: skipHosts}
}

// Filter returns the replacement for key, with the verdict that made it;
// ok is false when the status stays as it is.
func (f *StatusFilter) Filter(key string) (replacement string, v Verdict, ok bool) {
	status, reason, _ := strings.Cut(key, " ")
	if len(status) < 5 || status[0] != '5' || status[1] != '.' {
		return "", Verdict{}, false
	}
	d := Delivery{Status: "bounced", DSN: status, Reply: reason}
	if h := hostRE.FindStringSubmatch(reason); h != nil {
		d.RelayHost = strings.ToLower(h[1])
		d.RelayAddr, _ = netip.ParseAddr(strings.TrimPrefix(h[2], "IPv6:"))
	}
	for _, h := range f.skipHosts {
		if host, _, _ := strings.Cut(h, ":"); d.RelayHost != "" && strings.EqualFold(host, d.RelayHost) {
			return "", Verdict{}, false
		}
	}
	v = f.c.Classify(d)
	switch {
	case !v.Block:
		return "", v, false
	case v.IPv6 && !f.ipv4 && !f.relay, !v.IPv6 && !f.relay:
		return "", v, false // nowhere else to send it: the bounce is the truth
	}
	return "4" + status[1:] + " " + reason, v, true
}
