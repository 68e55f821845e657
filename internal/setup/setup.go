// Package setup maps the configuration file (internal/config) onto the
// options of the shared libraries, so that the libraries know nothing of
// the file format: a test builds them without a config, and the schema can
// change without touching them. Both daemons' set-up code calls it.
package setup

import (
	"fmt"
	"slices"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/geo"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/provider"
	"github.com/mxdetour/mxdetour/policyd/route"
)

// Lookup returns the resolver options of the [dns] section.
func Lookup(c config.DNS) lookup.Options {
	return lookup.Options{
		Servers: c.Servers, Timeout: c.Timeout.Duration, Attempts: c.Attempts, CacheSize: c.CacheSize,
		MinTTL: c.MinTTL.Duration, MaxTTL: c.MaxTTL.Duration, NegativeMaxTTL: c.NegativeMaxTTL.Duration,
		ErrorTTL: c.ErrorTTL.Duration, StaleTTL: c.StaleTTL.Duration,
	}
}

// Providers returns the enabled [providers.NAME] sections, ordered by name
// (so which provider keeps a suffix two of them claim does not depend on
// map order), and the origin-AS services of [dns].
func Providers(c *config.Config) provider.Options {
	names := make([]string, 0, len(c.Providers))
	for n, p := range c.Providers {
		if p.Enabled {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	o := provider.Options{ASNZone: c.DNS.ASNZone, ASN6Zone: c.DNS.ASN6Zone}
	for _, n := range names {
		p := c.Providers[n]
		o.Providers = append(o.Providers, provider.Provider{
			Name: n, MXSuffixes: p.MXSuffixes, ASNs: p.ASNs, Zones: p.Zones, Route: provider.Route(p.Route),
		})
	}
	return o
}

// Geo returns the country source options of [milter.geo].
func Geo(c config.Geo) geo.Options {
	return geo.Options{
		Source: c.Source, MMDBFile: c.MMDBFile, DelegatedFiles: c.DelegatedFiles,
		DNSZone: c.DNSZone, DNS6Zone: c.DNS6Zone,
	}
}

// GeoPolicy returns the rule table of [milter.geo]: the [[milter.geo.rules]]
// in the order written, then block_countries as one more block rule, with
// allow as the exempt networks. AS numbers are asked of r (the dns_zone
// service, cached); r nil: AS fields match nothing.
func GeoPolicy(c config.Geo, r lookup.Resolver) geo.Policy {
	p := geo.Policy{Exempt: c.Allow}
	for i, gr := range c.Rules {
		reply := gr.Reply
		if reply == "" && !gr.Allow {
			reply = c.Reply
		}
		p.Rules = append(p.Rules, geo.Rule{Name: fmt.Sprintf("milter.geo.rules[%d]", i), Countries: gr.Countries,
			ASNs: gr.ASNs, Networks: gr.Networks, Allow: gr.Allow, LogOnly: gr.Action == "log", Reply: reply})
	}
	if len(c.BlockCountries) > 0 {
		p.Rules = append(p.Rules, geo.Rule{Name: "milter.geo.block_countries", Countries: c.BlockCountries, Reply: c.Reply})
	}
	if r != nil && GeoUsesASN(c) {
		p.ASN = geo.ASNLookup(r, c.DNSZone, c.DNS6Zone)
	}
	return p
}

// GeoUsesASN reports whether a [[milter.geo.rules]] row names AS numbers
// (and so needs a resolver).
func GeoUsesASN(c config.Geo) bool {
	return slices.ContainsFunc(c.Rules, func(r config.GeoRule) bool { return len(r.ASNs) > 0 })
}

// Route returns the decision's options: [domains], [[rules]],
// [providers], [transports] and the decision keys of [policyd]. Postfix's
// own domains (from_postfix) are the daemon's to add, as it reads them.
func Route(c *config.Config) route.Options {
	o := route.Options{
		Local: c.Domains.Local, Reserved: c.Domains.Reserved, Providers: Providers(c),
		Relay: c.Transports.Relay, IPv4: c.Transports.IPv4,
		RejectNullMX: c.Policyd.NullMX == "reject", TempOnDNSFailure: c.Policyd.OnDNSFailure == "temp",
	}
	for _, r := range c.Rules {
		o.Rules = append(o.Rules, route.Rule{Domain: r.Domain, Address: r.Address, Route: route.Route(r.Route)})
	}
	return o
}
