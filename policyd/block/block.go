// Package block holds the value types that mxdetour-policyd's learner
// (policyd/learn: log tailing, state file, postsuper) and its decision
// (policyd/route) share, so that the decision imports no I/O.
package block

import (
	"net/netip"
	"time"
)

// The routes a learned block asks for.
const (
	// RouteRelay: the destination refuses our sending IP (or, for blocks
	// saved before routes existed, we do not know which): the relay.
	RouteRelay = "relay"
	// RouteIPv4: the destination refuses only our IPv6 address (Gmail's
	// IPv6 sending guidelines, a blocklist quoting our IPv6 address):
	// sending over IPv4 is enough.
	RouteIPv4 = "ipv4"
)

// ScopeProvider is the Scope of a block that applies to every destination
// of its Provider: the refusal said that our address or network is refused
// across the provider (Microsoft's S3150, Gmail's IP reputation ...), so
// each of its tenants would refuse us in turn.
const ScopeProvider = "provider"

// Block is a learned refusal of our sending IP by a destination: its
// domain and the MX host that refused, until Expires. A block of an MX
// host also covers the other domains that use that host.
type Block struct {
	Domain   string `json:"domain"`
	MXHost   string `json:"mx_host"`
	Provider string `json:"provider,omitempty"`
	// Scope is ScopeProvider for a block of every destination of
	// Provider; "" (a state file written before scopes existed too) for a
	// block of Domain and MXHost only.
	Scope string `json:"scope,omitempty"`
	Kind  string `json:"kind"` // which pattern recognised the refusal ("gmail-ip-reputation", "dnsbl:ZONE" ...)
	// Route is what the block asks for: RouteIPv4 or RouteRelay. A state
	// file written before routes existed has none: read it with Via.
	Route    string    `json:"route"`
	Reply    string    `json:"reply"` // the refusal as Postfix logged it
	QueueIDs []string  `json:"queue_ids,omitempty"`
	Learned  time.Time `json:"learned"`       // the first refusal
	Seen     time.Time `json:"seen,omitzero"` // the latest refusal (zero: Learned)
	Expires  time.Time `json:"expires"`       // Seen plus the block lifetime
	// Client is our sending address as the refusal quoted it, when it
	// did: a fleet host that applies only blocks of its own addresses
	// ([fleet] share = "own") checks it.
	Client netip.Addr `json:"client,omitzero"`
	// Host is the fleet host that learned the block ([fleet] name); ""
	// for a block learned from this host's own delivery log.
	Host string `json:"host,omitempty"`
}

// ProviderWide reports whether b applies to every destination of its
// provider, not only to its domain and MX host.
func (b Block) ProviderWide() bool { return b.Scope == ScopeProvider && b.Provider != "" }

// Via returns the route b asks for: RouteIPv4 for a refusal of our IPv6
// address only, else RouteRelay (also for a block without a route).
func (b Block) Via() string {
	if b.Route == RouteIPv4 {
		return RouteIPv4
	}
	return RouteRelay
}

// IPv6Only reports whether b refuses only our IPv6 address, so that
// sending over IPv4 is enough.
func (b Block) IPv6Only() bool { return b.Via() == RouteIPv4 }

// LastSeen returns the time of the latest refusal that made or extended b.
func (b Block) LastSeen() time.Time {
	if b.Seen.After(b.Learned) {
		return b.Seen
	}
	return b.Learned
}

// Active reports whether b still applies at now.
func (b Block) Active(now time.Time) bool { return now.Before(b.Expires) }
