package geo

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/mxdetour/mxdetour/internal/asn"
	"github.com/mxdetour/mxdetour/internal/lookup"
)

// Rule is one row of the rule table. It matches a client when any one of
// its fields does: its address is in Networks, its country is in
// Countries ("*": any country the source knows), or its network's origin
// AS is in ASNs. An address whose country or AS is unknown matches no
// country or AS field: unknown data never refuses (fail open).
type Rule struct {
	Name      string // how logs name it, e.g. "milter.geo.rules[2]"
	Countries []string
	ASNs      []uint32
	Networks  []netip.Prefix
	// Allow admits a client it matches; the rules after it are not asked.
	Allow bool
	// LogOnly makes a block rule log what it would refuse, and refuse
	// nothing.
	LogOnly bool
	// Reply is the SMTP reply of a refusal, "550 5.7.1 text"; "" = the
	// caller's default.
	Reply string
}

// AnyCountry in Rule.Countries matches every country the source knows.
const AnyCountry = "*"

// Policy is what a Blocker decides with: rules in the order written,
// first match wins, after the exempt networks.
type Policy struct {
	Rules  []Rule
	Exempt []netip.Prefix // never refused, whatever the rules say
	// ASN finds the origin AS numbers of an address (nil, nil when
	// unknown); nil: rules with ASNs match by their other fields only.
	ASN func(ctx context.Context, ip netip.Addr) ([]uint32, error)
}

// ASNLookup returns a Policy.ASN asking a Team Cymru style DNS service
// (package asn) through r, which caches the answers.
func ASNLookup(r lookup.Resolver, zone4, zone6 string) func(context.Context, netip.Addr) ([]uint32, error) {
	return func(ctx context.Context, ip netip.Addr) ([]uint32, error) {
		o, st, err := asn.Lookup(ctx, r, zone4, zone6, ip)
		switch st {
		case lookup.Answer:
			return o.ASNs, nil
		case lookup.TempFail:
			return nil, fmt.Errorf("AS lookup: %w", err)
		}
		return nil, nil
	}
}

// Verdict is what the rules say of one client.
type Verdict struct {
	Rule    int    // index of the matching rule; -1: none matched (admitted)
	Name    string // its Name
	Allow   bool   // an allow rule matched
	LogOnly bool   // a log-only block rule matched: admitted, to be logged
	Matched string // what matched: "country RU", "AS 64496", "network 198.51.100.0/24"
	Country string // the client's country, when it was looked up and known
	Reply   string // the matching rule's Reply
}

// Refuse tells whether the client is to be refused.
func (v Verdict) Refuse() bool { return v.Rule >= 0 && !v.Allow && !v.LogOnly }

// facts are the client's country and AS numbers, looked up once and only
// when a rule asks.
type facts struct {
	ip              netip.Addr
	src             Source // nil: no country data
	asnFn           func(context.Context, netip.Addr) ([]uint32, error)
	cc              string
	asns            []uint32
	haveCC, haveASN bool
}

func (f *facts) country(ctx context.Context) (string, error) {
	if !f.haveCC && f.src != nil {
		cc, err := f.src.Country(ctx, f.ip)
		if err != nil {
			return "", fmt.Errorf("country lookup: %w", err)
		}
		f.cc = cc
	}
	f.haveCC = true
	return f.cc, nil
}

func (f *facts) origin(ctx context.Context) ([]uint32, error) {
	if !f.haveASN && f.asnFn != nil {
		a, err := f.asnFn(ctx, f.ip)
		if err != nil {
			return nil, err
		}
		f.asns = a
	}
	f.haveASN = true
	return f.asns, nil
}

// match says what of r matches the client, "" when nothing does. Networks
// are compared first, then the country, then the AS: a lookup is made only
// when the cheaper fields did not match.
func (r *Rule) match(ctx context.Context, f *facts) (string, error) {
	for _, p := range r.Networks {
		if p.Contains(f.ip) {
			return "network " + p.String(), nil
		}
	}
	if len(r.Countries) > 0 {
		cc, err := f.country(ctx)
		if err != nil {
			return "", err
		}
		if cc != "" && (slices.Contains(r.Countries, cc) || slices.Contains(r.Countries, AnyCountry)) {
			return "country " + cc, nil
		}
	}
	if len(r.ASNs) > 0 {
		as, err := f.origin(ctx)
		if err != nil {
			return "", err
		}
		for _, a := range as {
			if slices.Contains(r.ASNs, a) {
				return fmt.Sprintf("AS %d", a), nil
			}
		}
	}
	return "", nil
}

// evaluate runs the rules in order for f; the first that matches decides.
// A lookup that fails stops the evaluation with its error: the caller
// admits the client (fail open) rather than let a later rule decide what
// an earlier one could not.
func (p *Policy) evaluate(ctx context.Context, f *facts) (Verdict, error) {
	for i := range p.Rules {
		r := &p.Rules[i]
		what, err := r.match(ctx, f)
		if err != nil {
			return Verdict{Rule: -1, Country: f.cc}, err
		}
		if what != "" {
			return Verdict{Rule: i, Name: r.Name, Allow: r.Allow, LogOnly: r.LogOnly && !r.Allow,
				Matched: what, Country: f.cc, Reply: r.Reply}, nil
		}
	}
	return Verdict{Rule: -1, Country: f.cc}, nil
}
