// Package provider recognises the mail provider behind a domain's MX: by
// the MX host name (a suffix matched on label boundaries, so
// "fakegoogle.com" and "google.com.evil.example" are not Google) and,
// failing that, by the network (origin AS) of the primary MX's address.
package provider

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/mxdetour/mxdetour/internal/asn"
	"github.com/mxdetour/mxdetour/internal/lookup"
)

// Route is what a provider's recipients get. Any other value ("never":
// recognised, but routed direct) routes direct.
type Route string

const (
	Always     Route = "always"      // always through the relay
	WhenListed Route = "when-listed" // through the relay while our address is listed on one of Zones
	// IPv4WhenListed: by the ipv4 transport while only our IPv6 addresses
	// are listed on one of Zones; never the relay.
	IPv4WhenListed Route = "ipv4-when-listed"
)

// Method says how a provider was recognised.
type Method string

const (
	ByHost    Method = "mx-host"
	ByASN     Method = "asn"
	ByDefault Method = "default" // no other provider claimed the destination
)

// Provider is one configured provider.
type Provider struct {
	Name       string
	MXSuffixes []string
	ASNs       []uint32
	Zones      []string
	Route      Route
}

// Match is the outcome of Classify.
type Match struct {
	Provider *Provider // nil when no provider was recognised
	Method   Method
	Host     string     // the MX host that matched, or whose address was looked up
	Addr     netip.Addr // for ByASN
	ASN      uint32     // for ByASN
	Err      error      // a lookup failure on the ASN path
}

// Classifier recognises providers. It is immutable and safe for concurrent use.
type Classifier struct {
	providers []*Provider
	suffixes  map[string]*Provider // suffix -> provider
	maxLabels int
	byASN     map[uint32]*Provider
	fallback  *Provider // DefaultName, or nil
	zone4     string
	zone6     string
	r         lookup.Resolver
}

// Options are what a Classifier knows: the providers, in the order they
// are tried (the first to claim a suffix or a network keeps it), and the
// origin-AS TXT services (Team Cymru's format) for the network fallback.
// A provider named DefaultName matches every destination no other claims.
type Options struct {
	Providers         []Provider
	ASNZone, ASN6Zone string
}

// DefaultName is the name of the provider of last resort.
const DefaultName = "default"

// New builds a Classifier; r answers the network lookups.
func New(o Options, r lookup.Resolver) *Classifier {
	c := &Classifier{suffixes: map[string]*Provider{}, byASN: map[uint32]*Provider{}, zone4: o.ASNZone, zone6: o.ASN6Zone, r: r}
	for i := range o.Providers {
		p := &o.Providers[i]
		c.providers = append(c.providers, p)
		if p.Name == DefaultName {
			c.fallback = p
			continue
		}
		for _, s := range p.MXSuffixes {
			s = strings.ToLower(strings.Trim(s, "."))
			if _, taken := c.suffixes[s]; !taken {
				c.suffixes[s] = p
			}
			c.maxLabels = max(c.maxLabels, strings.Count(s, ".")+1)
		}
		for _, a := range p.ASNs {
			if _, taken := c.byASN[a]; !taken {
				c.byASN[a] = p
			}
		}
	}
	return c
}

// Providers returns the enabled providers, by name.
func (c *Classifier) Providers() []*Provider { return c.providers }

// ByName returns the provider called name, or nil.
func (c *Classifier) ByName(name string) *Provider {
	for _, p := range c.providers {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// ByHost returns the provider whose MX suffix host falls under, or nil.
// host must be lower case; a trailing dot is ignored. It looks up the
// host's parent names from the shortest suffix up, without allocating.
func (c *Classifier) ByHost(host string) *Provider {
	host = strings.TrimSuffix(host, ".")
	var found *Provider
	labels := 0
	for i := len(host) - 1; i >= -1 && labels < c.maxLabels; i-- {
		if i == -1 || host[i] == '.' {
			labels++
			if p, ok := c.suffixes[host[i+1:]]; ok {
				found = p // keep going: a longer suffix is more specific
			}
		}
	}
	return found
}

// Classify recognises the provider of a domain from its MX records: any MX
// host by name (the most preferred first), else the network of the
// primary MX's first address, else the default provider. When the network
// lookup failed (Match.Err) the default provider is still the answer: the
// destination may belong to another provider nobody could recognise, but
// the catch-all's route (IPv4 while our IPv6 address is listed) is right
// for it too, where "no provider" would send it direct.
func (c *Classifier) Classify(ctx context.Context, mx []lookup.MX) Match {
	m := c.classify(ctx, mx)
	if m.Provider == nil && c.fallback != nil {
		m.Provider, m.Method = c.fallback, ByDefault
	}
	return m
}

func (c *Classifier) classify(ctx context.Context, mx []lookup.MX) Match {
	if len(mx) == 0 || mx[0].Host == "" {
		return Match{}
	}
	for _, m := range mx {
		if p := c.ByHost(m.Host); p != nil {
			return Match{Provider: p, Method: ByHost, Host: m.Host}
		}
	}
	if len(c.byASN) == 0 {
		return Match{}
	}
	host := mx[0].Host
	addr, err := c.address(ctx, host)
	if err != nil {
		return Match{Host: host, Err: err}
	}
	if !addr.IsValid() {
		return Match{Host: host}
	}
	return c.byNetwork(ctx, host, addr)
}

// OfHost recognises the provider of one mail host that answered us (a
// delivery log's relay=host[addr]): by its name, else by the network of
// addr, the address we connected to. It never answers the default
// provider, which names no host and no network.
func (c *Classifier) OfHost(ctx context.Context, host string, addr netip.Addr) Match {
	host = strings.ToLower(host)
	if p := c.ByHost(host); p != nil {
		return Match{Provider: p, Method: ByHost, Host: host}
	}
	if len(c.byASN) == 0 || !addr.IsValid() {
		return Match{Host: host}
	}
	return c.byNetwork(ctx, host, addr.Unmap())
}

// byNetwork recognises a provider by the origin AS of addr, host's address.
func (c *Classifier) byNetwork(ctx context.Context, host string, addr netip.Addr) Match {
	o, st, err := asn.Lookup(ctx, c.r, c.zone4, c.zone6, addr)
	switch st {
	case lookup.Answer:
	case lookup.TempFail:
		return Match{Host: host, Addr: addr, Err: fmt.Errorf("network of %s: %w", addr, err)}
	default:
		return Match{Host: host, Addr: addr}
	}
	for _, a := range o.ASNs {
		if p, ok := c.byASN[a]; ok {
			return Match{Provider: p, Method: ByASN, Host: host, Addr: addr, ASN: a}
		}
	}
	return Match{Host: host, Addr: addr, ASN: o.ASNs[0]}
}

// address returns the first IPv4 address of host, else its first IPv6.
func (c *Classifier) address(ctx context.Context, host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return a, nil
	}
	res := c.r.A(ctx, host)
	if res.Status == lookup.Answer {
		return res.Addrs[0], nil
	}
	if res.Status == lookup.TempFail {
		return netip.Addr{}, fmt.Errorf("address of %s: %w", host, res.Err)
	}
	res = c.r.AAAA(ctx, host)
	switch res.Status {
	case lookup.Answer:
		return res.Addrs[0], nil
	case lookup.TempFail:
		return netip.Addr{}, fmt.Errorf("address of %s: %w", host, res.Err)
	}
	return netip.Addr{}, nil
}
