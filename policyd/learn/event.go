package learn

import (
	"fmt"
	"strings"
	"time"

	"github.com/mxdetour/mxdetour/internal/alert"
)

// EventBlockLearned is the alert kind of a learned block.
const EventBlockLearned = "block-learned"

// Summary says in one line what a block learned (fresh) or rerouted (not
// fresh) means for the destination.
func Summary(b Block, fresh bool) string {
	what, route := "our IP", "the relay"
	if b.IPv6Only() {
		what, route = "our IPv6 address", "IPv4 (the relay when no ipv4 transport is configured)"
	}
	if !fresh {
		what = "our IPv4 address too"
	}
	if b.ProviderWide() {
		return fmt.Sprintf("%s refuses %s at every destination it hosts (%s, learned from %s, MX %s): their mail goes via %s until %s",
			b.Provider, what, b.Kind, b.Domain, b.MXHost, route, b.Expires.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("%s refuses %s (%s, MX %s): its mail goes via %s until %s",
		b.Domain, what, b.Kind, b.MXHost, route, b.Expires.UTC().Format(time.RFC3339))
}

// AlertEvent is the postmaster's alert for a block the learner reported
// through Options.OnBlock:
//
//	OnBlock: func(b block.Block, fresh bool) { alerter.Notify(learn.AlertEvent(b, fresh)) },
func AlertEvent(b Block, fresh bool) alert.Event {
	change := "new"
	if !fresh {
		change = "now-relay"
	}
	f := map[string]string{
		"domain":  b.Domain,
		"mx_host": b.MXHost,
		"kind":    b.Kind,
		"route":   b.Via(),
		"change":  change,
		"learned": b.Learned.UTC().Format(time.RFC3339),
		"until":   b.Expires.UTC().Format(time.RFC3339),
		"reply":   short(b.Reply),
	}
	if b.Provider != "" {
		f["provider"] = b.Provider
	}
	if b.ProviderWide() {
		f["scope"] = "provider-wide"
	}
	if len(b.QueueIDs) > 0 {
		f["queue_ids"] = strings.Join(b.QueueIDs, " ")
	}
	return alert.Event{Time: b.LastSeen(), Kind: EventBlockLearned, Summary: Summary(b, fresh), Fields: f}
}
