// Package route makes mxdetour-policyd's one decision: for a recipient, send
// direct, force IPv4, or go through the relay — and say why.
//
// The order is DESIGN.md's, first match wins:
//
//  0. a reserved domain (RFC 2606/6761), or a null MX (RFC 7505) when so
//     configured: Postfix's error transport bounces at once;
//  1. a static rule from the config; then an address literal
//     ("user@[192.0.2.1]", RFC 5321 section 4.1.3) goes direct, as Postfix
//     delivers it to that address: a literal is never looked up in DNS;
//  2. a block learned from the delivery log, for the domain or one of its MX
//     hosts, that refuses our IP → relay; and, once step 3 has recognised
//     the provider, a provider-wide block of that provider (a refusal such
//     as Microsoft's S3150, learned from any of its destinations) → relay;
//  3. the provider of the MX (host name, else the network of the MX address):
//     route "always" → relay; "when-listed" → relay while one of our addresses
//     is listed on one of the provider's zones, or the ipv4 transport when only
//     IPv6 is listed; "ipv4-when-listed" → the ipv4 transport while only IPv6
//     is listed, never the relay. A destination no provider claims belongs to
//     the provider named "default";
//  4. a learned block that refuses only our IPv6 address → the ipv4 transport
//     (the relay when none is configured), unless step 3 chose the relay;
//  5. otherwise what step 3 chose, or direct.
//
// So a destination that goes through the relay anyway keeps the relay when
// it also refuses our IPv6 address, and one that refuses both our IPv4 and
// IPv6 addresses takes the relay (the blocks store prefers such a block).
//
// Decisions are not cached here: each one is made from cached lookups, so it
// lives as long as the shortest TTL of the records that made it, and a new
// listing or learned block applies to the very next request. Only the DNS
// facts of a domain (its MX answer and their provider) are kept beside the
// lookup cache for up to a second (facts.go), bounded by the MX's TTL.
package route

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mxdetour/mxdetour/internal/dnsbl"
	"github.com/mxdetour/mxdetour/internal/domain"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/provider"
	"github.com/mxdetour/mxdetour/policyd/block"
)

// Route is where a recipient's mail goes.
type Route string

const (
	Direct Route = "direct" // Postfix's default: MX lookup, both address families
	IPv4   Route = "ipv4"   // the ipv4 transport: direct, but over IPv4 only
	Relay  Route = "relay"  // the relay transport (mx03)
	Reject Route = "reject" // Postfix's error transport: bounce at once
)

// Reason says which step decided. It is a short token for logs and metrics;
// Decision.Detail carries the words for a person.
type Reason string

const (
	ReasonNoDomain      Reason = "no-domain"
	ReasonLocal         Reason = "local-domain"
	ReasonReserved      Reason = "reserved-domain"
	ReasonRule          Reason = "rule"
	ReasonLearned       Reason = "learned-block"
	ReasonLearnedIPv6   Reason = "learned-ipv6-block" // a learned block of our IPv6 address only: IPv4
	ReasonProvider      Reason = "provider"
	ReasonListed        Reason = "listed"
	ReasonListedIPv6    Reason = "listed-ipv6-only"
	ReasonNotListed     Reason = "provider-not-listed"
	ReasonListedNoRoute Reason = "listed-no-route" // listed, but the provider's route has nothing that helps
	ReasonNoProvider    Reason = "no-provider"
	ReasonNullMX        Reason = "null-mx"
	ReasonNXDomain      Reason = "nxdomain"
	ReasonDNSFailure    Reason = "dns-failure"
	ReasonDeadline      Reason = "deadline"
	ReasonProviderNone  Reason = "provider-route-never"
	ReasonLiteral       Reason = "address-literal"
	ReasonNumeric       Reason = "numeric-domain"
)

// Decision is the outcome for one recipient.
type Decision struct {
	Domain    string
	Route     Route
	Transport string // Postfix "transport:nexthop" for Relay and IPv4; "error:..." for Reject
	Reason    Reason
	Provider  string // "" when none was recognised
	Method    string // how the provider was recognised: "mx-host" or "asn"
	MX        []lookup.MX
	Listings  []dnsbl.Result // listings of ours that mattered
	Block     *block.Block   // the learned block that decided, if any
	Detail    []string       // why, for a person (check, debug logs)
	Cached    bool           // every lookup was answered from the cache
	DryRun    bool           // a route was chosen but no transport is configured for it
	Temporary bool           // DNS failed and the config asks Postfix to retry (socketmap TEMP)

	explain bool      // fill Detail (check, debug); off on the hot path
	at      time.Time // when the request came: the clock of the decision
}

// why adds a line for a person to Detail, when explaining.
func (d *Decision) why(format string, args ...any) {
	if d.explain {
		d.Detail = append(d.Detail, fmt.Sprintf(format, args...))
	}
}

// Listings tells whether our own sending addresses are listed; dnsbl.Monitor
// implements it.
type Listings interface {
	Listing(zones []string) dnsbl.Listing
}

// Blocks holds blocks learned from the delivery log; learn.Store implements it.
// Where several blocks apply, Lookup returns one that needs the relay
// before one that needs only IPv4.
type Blocks interface {
	Lookup(domain string, mxHosts []string, now time.Time) (block.Block, bool)
	// LookupProvider returns a provider-wide block (block.ScopeProvider)
	// of the provider named, learned from any of its destinations.
	LookupProvider(provider string, now time.Time) (block.Block, bool)
}

// Engine decides. It is safe for concurrent use; Swap replaces its
// configuration atomically (SIGHUP).
type Engine struct {
	r        lookup.Resolver
	listings Listings
	blocks   Blocks
	now      func() time.Time
	st       atomic.Pointer[state]
}

// Options is what the engine decides with; the daemon's set-up builds it
// from the configuration file (internal/setup.Route), so that this package
// knows nothing of the file.
type Options struct {
	// Local are our own domains (and their subdomains): never routed.
	Local []string
	// Reserved are more names treated as reserved (RFC 2606), besides the
	// built-in ones: refused at once.
	Reserved []string
	// Rules are the static rules, first match wins.
	Rules []Rule
	// Providers recognises the provider of a destination's MX.
	Providers provider.Options
	// Relay and IPv4 are Postfix transports ("transport:nexthop"); an
	// empty Relay is a dry run.
	Relay, IPv4 string
	// RejectNullMX bounces mail to a null MX (RFC 7505) at once, rather
	// than letting Postfix find out.
	RejectNullMX bool
	// TempOnDNSFailure has the socketmap answer TEMP when the recipient
	// domain's DNS fails (Decision.Temporary); else direct.
	TempOnDNSFailure bool
}

// Rule is a static rule: a recipient Address, or a Domain (with its
// subdomains), and the Route for it.
type Rule struct {
	Domain, Address string
	Route           Route
}

// state is everything a reload replaces.
type state struct {
	o          Options
	classifier *provider.Classifier
	rules      []rule
	facts      *factsMemo // DNS facts of recent domains; a reload starts afresh
}

type rule struct {
	domain, address string
	route           Route
}

// New returns an engine deciding with o. listings and blocks may be nil
// (no self-listing checks, no learning).
func New(o Options, r lookup.Resolver, listings Listings, blocks Blocks) *Engine {
	e := &Engine{r: r, listings: listings, blocks: blocks, now: time.Now}
	e.Swap(o)
	return e
}

// Swap makes o the options of every later decision.
func (e *Engine) Swap(o Options) {
	st := &state{
		o:          o,
		classifier: provider.New(o.Providers, e.r),
		facts:      newFactsMemo(),
	}
	for _, r := range o.Rules {
		dom := strings.ToLower(strings.TrimSuffix(r.Domain, "."))
		if lit, err := domain.Normalize(dom); err == nil && domain.IsLiteral(lit) {
			dom = lit // any spelling of the address names it
		}
		st.rules = append(st.rules, rule{
			domain:  dom,
			address: strings.ToLower(r.Address),
			route:   r.Route,
		})
	}
	e.st.Store(st)
}

// Classifier returns the provider classifier of the current configuration.
func (e *Engine) Classifier() *provider.Classifier { return e.st.Load().classifier }

// DryRun reports whether no relay is configured, so that every decision is
// only logged and Postfix is always told "direct".
func (e *Engine) DryRun() bool { return e.st.Load().o.Relay == "" }

// Decide returns the route for one recipient address. It returns when ctx
// ends at the latest (the decision deadline); a DNS answer that comes later
// still fills the cache for the next request.
func (e *Engine) Decide(ctx context.Context, recipient string) Decision {
	return e.decide(ctx, recipient, false, e.now())
}

// DecideAt is Decide for a request that came at now (the caller has read
// the clock already: at tens of thousands of requests a second, each read
// counts).
func (e *Engine) DecideAt(ctx context.Context, recipient string, now time.Time) Decision {
	return e.decide(ctx, recipient, false, now)
}

// Explain is Decide with Detail filled in, for `check` and debug logs.
func (e *Engine) Explain(ctx context.Context, recipient string) Decision {
	return e.decide(ctx, recipient, true, e.now())
}

func (e *Engine) decide(ctx context.Context, recipient string, explain bool, now time.Time) Decision {
	st := e.st.Load()
	dom, err := domain.FromAddress(recipient)
	if err != nil {
		return Decision{Route: Direct, Reason: ReasonNoDomain, Detail: []string{err.Error()}}
	}
	d := Decision{Domain: dom, Cached: true, explain: explain, at: now}
	// Our own domains first: Postfix delivers them itself, even one under
	// a reserved name (localhost, a test host named under example.net).
	switch {
	case domain.Within(dom, st.o.Local):
		d.Route, d.Reason = Direct, ReasonLocal
		d.why("one of our local domains: never routed")
		return d
	case domain.Reserved(dom, st.o.Reserved):
		return st.reject(d, ReasonReserved, fmt.Sprintf("error:5.1.2 %s is a reserved domain (RFC 2606) and does not receive mail", dom))
	}
	if r, ok := st.matchRule(recipient, dom); ok {
		d.Reason = ReasonRule
		d.why("%s", r.describe())
		return st.route(d, r.route)
	}
	if a, ok := domain.Literal(dom); ok {
		// RFC 5321 section 4.1.3: mail goes to that address, no MX.
		d.Route, d.Reason = Direct, ReasonLiteral
		d.why("address literal: Postfix delivers straight to %s, with no DNS lookup; only a static rule naming %s routes it", a, dom)
		return d
	}
	if isNumeric(dom) {
		d.Route, d.Reason = Direct, ReasonNumeric
		d.why("a bare IP address is not a domain (write it as [%s]): Postfix rejects it, unless resolve_numeric_domain = yes delivers to that address", dom)
		return d
	}
	return e.decideByMX(ctx, st, d)
}

// isNumeric reports whether the normalised domain d is an IPv4 address
// without the brackets of a literal, which is no name to look up. No
// top-level domain ends in a digit, so a name almost never gets as far as
// the parse. (Normalize refuses a bare IPv6 address.)
func isNumeric(d string) bool {
	if c := d[len(d)-1]; c < '0' || c > '9' {
		return false
	}
	_, err := netip.ParseAddr(d)
	return err == nil
}

func (e *Engine) decideByMX(ctx context.Context, st *state, d Decision) Decision {
	var f *facts // explaining looks everything up
	if !d.explain {
		f = st.facts.get(d.Domain, d.at)
	}
	var res lookup.Result
	if f != nil {
		res = f.mx
	} else {
		res = e.r.MX(ctx, d.Domain)
	}
	d.Cached = res.Cached || f != nil
	switch res.Status {
	case lookup.NXDomain:
		d.Route, d.Reason = Direct, ReasonNXDomain
		d.why("the domain does not exist (NXDOMAIN); Postfix will bounce")
		return d
	case lookup.TempFail:
		return st.dnsFailure(d, res.Err)
	case lookup.NoData:
		// RFC 5321 section 5.1: no MX means the domain itself is the mail host.
		d.MX = []lookup.MX{{Host: d.Domain}}
		d.why("no MX records: the domain's own address is its mail host")
	default:
		d.MX = res.MX
	}
	if isNullMX(d.MX) {
		d.Reason = ReasonNullMX
		d.why("null MX (RFC 7505): the domain accepts no mail")
		if st.o.RejectNullMX {
			return st.reject(d, ReasonNullMX, fmt.Sprintf("error:5.1.10 %s does not accept mail (null MX, RFC 7505)", d.Domain))
		}
		d.Route = Direct
		return d
	}
	if d.explain {
		d.why("MX %s", mxList(d.MX))
	}

	b, learned := e.learned(d)
	if learned && !b.IPv6Only() {
		hit := b // escapes to the heap: only on a hit
		d.Reason, d.Block = ReasonLearned, &hit
		d.Provider = b.Provider
		d.why("learned block (%s) of our IP from %s, until %s: %s",
			b.Kind, b.MXHost, b.Expires.UTC().Format(time.RFC3339), b.Reply)
		return st.route(d, Relay)
	}
	d = e.byProvider(ctx, st, d, res, f)
	if pb, ok := e.providerBlock(d); ok {
		if !pb.IPv6Only() {
			return st.learnedWide(d, pb)
		}
		if !learned {
			b, learned = pb, true
		}
	}
	if learned {
		return st.learnedIPv6(d, b)
	}
	return d
}

// providerBlock looks up a provider-wide block of the provider step 3
// recognised (by MX name or MX network, never the default provider).
func (e *Engine) providerBlock(d Decision) (block.Block, bool) {
	if e.blocks == nil || d.Provider == "" || d.Method == string(provider.ByDefault) {
		return block.Block{}, false
	}
	return e.blocks.LookupProvider(d.Provider, d.at)
}

// learnedWide applies a provider-wide block of our IP, learned from
// another destination of d's provider: the relay, as for a block of the
// domain itself (step 2), whatever the provider's own route said.
func (st *state) learnedWide(d Decision, b block.Block) Decision {
	d.Reason, d.Block, d.Transport, d.DryRun, d.Listings = ReasonLearned, &b, "", false, nil
	d.why("learned block (%s) of our IP at every destination of %s, from %s (MX %s), until %s: %s",
		b.Kind, b.Provider, b.Domain, b.MXHost, b.Expires.UTC().Format(time.RFC3339), b.Reply)
	return st.route(d, Relay)
}

// learned looks up a block learned for the domain or one of its MX hosts.
func (e *Engine) learned(d Decision) (block.Block, bool) {
	if e.blocks == nil {
		return block.Block{}, false
	}
	var buf [8]string
	hosts := buf[:0]
	for _, m := range d.MX {
		hosts = append(hosts, m.Host)
	}
	return e.blocks.Lookup(d.Domain, hosts, d.at)
}

// learnedIPv6 applies a learned block of our IPv6 address only, after
// the provider step decided d: the relay stays the relay (it does not use
// our IPv6 address); anything else becomes IPv4, also a relay in a dry run.
func (st *state) learnedIPv6(d Decision, b block.Block) Decision {
	d.Block = &b
	if d.Provider == "" {
		d.Provider = b.Provider
	}
	from := b.MXHost
	if b.ProviderWide() {
		from = fmt.Sprintf("%s (at every destination of %s, learned from %s)", b.MXHost, b.Provider, b.Domain)
	}
	if d.Route == Relay && !d.DryRun {
		d.why("learned block (%s) of our IPv6 address from %s, until %s: the relay is taken anyway",
			b.Kind, from, b.Expires.UTC().Format(time.RFC3339))
		return d
	}
	d.Reason, d.Transport, d.DryRun = ReasonLearnedIPv6, "", false
	d.why("learned block (%s) of our IPv6 address from %s, until %s: %s",
		b.Kind, from, b.Expires.UTC().Format(time.RFC3339), b.Reply)
	return st.route(d, IPv4)
}

// byProvider decides by the provider of the MX (step 3): mx is the MX
// answer, f the domain's facts when they were known.
func (e *Engine) byProvider(ctx context.Context, st *state, d Decision, mx lookup.Result, f *facts) Decision {
	var m provider.Match
	if f != nil {
		m = f.match
	} else {
		m = st.classifier.Classify(ctx, d.MX)
		if ctx.Err() == nil {
			st.facts.put(d.Domain, mx, m, d.at)
		}
	}
	if m.Err != nil {
		d.why("%s", "network of the MX address unknown: "+m.Err.Error())
		if ctx.Err() != nil {
			d.Cached = false
		}
	}
	if m.Provider == nil {
		d.Route, d.Reason = Direct, ReasonNoProvider
		if ctx.Err() != nil {
			d.Reason = ReasonDeadline
		}
		return d
	}
	p := m.Provider
	d.Provider, d.Method = p.Name, string(m.Method)
	// Guarded: the arguments of why are boxed (allocated) even when it
	// does not explain, and this is every decision's path.
	switch {
	case !d.explain:
	case m.Method == provider.ByASN:
		d.why("provider %s: address %s of MX %s is in AS%d", p.Name, m.Addr, m.Host, m.ASN)
	case m.Method == provider.ByDefault:
		d.why("provider %s: no other provider claims MX %s", p.Name, m.Host)
	default:
		d.why("provider %s: MX host %s", p.Name, m.Host)
	}
	switch p.Route {
	case provider.Always:
		d.Reason = ReasonProvider
		d.why("provider route: always relay")
		return st.route(d, Relay)
	case provider.WhenListed, provider.IPv4WhenListed:
		return e.whenListed(st, d, p)
	default:
		d.Route, d.Reason = Direct, ReasonProviderNone
		return d
	}
}

// whenListed applies a provider's "when-listed" route: relay while one of
// our IPv4 addresses is listed on a zone the provider uses; IPv4 only when
// just our IPv6 addresses are. "ipv4-when-listed" never relays: it forces
// IPv4 while only IPv6 is listed and otherwise goes direct.
func (e *Engine) whenListed(st *state, d Decision, p *provider.Provider) Decision {
	if e.listings == nil || len(p.Zones) == 0 {
		d.Route, d.Reason = Direct, ReasonNotListed
		d.why("provider route: %s; no blocklist checks configured", p.Route)
		return d
	}
	l := e.listings.Listing(p.Zones)
	d.Listings = l.Hits
	for _, h := range l.Hits {
		d.why("our address %s is listed on %s %s", h.Addr, h.Zone, h.Reason)
	}
	relays := p.Route == provider.WhenListed
	switch {
	case l.V4Listed && relays:
		d.Reason = ReasonListed
		return st.route(d, Relay)
	case l.V4Listed:
		d.Route, d.Reason = Direct, ReasonListedNoRoute
		d.why("provider route: %s; our IPv4 address is listed too, so forcing IPv4 would not help (route when-listed relays)", p.Route)
		return d
	case l.V6Listed && !relays && st.o.IPv4 == "":
		d.Route, d.Reason = Direct, ReasonListedNoRoute
		d.why("provider route: %s; no [transports] ipv4 configured, so only logged", p.Route)
		return d
	case l.V6Listed:
		d.Reason = ReasonListedIPv6
		return st.route(d, IPv4)
	}
	d.Route, d.Reason = Direct, ReasonNotListed
	if d.explain {
		for _, u := range l.Unknown {
			known := "as last known: " + u.Known.String()
			if u.Known == dnsbl.Unknown {
				known = "as not listed: nothing known yet"
			}
			d.why("whether our address %s is listed on %s is unknown (%s): routed %s", u.Addr, u.Zone, u.Cause, known)
		}
		if len(l.Unknown) == 0 {
			d.why("provider route: %s; none of our addresses is listed on %s", p.Route, strings.Join(p.Zones, ", "))
		} else {
			d.why("provider route: %s; none of our addresses is known to be listed on %s", p.Route, strings.Join(p.Zones, ", "))
		}
	}
	return d
}

// route fills in the transport for r, falling back from IPv4 to the relay
// and from the relay to a dry run when they are not configured.
func (st *state) route(d Decision, r Route) Decision {
	d.Route = r
	switch r {
	case IPv4:
		if st.o.IPv4 != "" {
			d.Transport = st.o.IPv4
			return d
		}
		d.Route = Relay
		d.why("no ipv4 transport configured: using the relay")
		fallthrough
	case Relay:
		if st.o.Relay == "" {
			d.DryRun = true
			d.why("dry run: no relay transport configured, Postfix is told to go direct")
			return d
		}
		d.Transport = st.o.Relay
	}
	return d
}

func (st *state) reject(d Decision, why Reason, transport string) Decision {
	d.Route, d.Reason, d.Transport = Reject, why, transport
	return d
}

// dnsFailure decides when the MX lookup failed or the deadline passed:
// direct (Postfix retries its own lookups as it always does) unless the
// config asks for a temporary failure.
func (st *state) dnsFailure(d Decision, err error) Decision {
	d.Route, d.Reason, d.Cached = Direct, ReasonDNSFailure, false
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		d.Reason = ReasonDeadline
	}
	if err != nil {
		d.why("%s", "MX lookup failed: "+err.Error())
	}
	if st.o.TempOnDNSFailure {
		d.Temporary = true
	}
	return d
}

func (st *state) matchRule(recipient, dom string) (rule, bool) {
	var addr string
	for _, r := range st.rules {
		if r.address != "" {
			if addr == "" {
				addr = strings.ToLower(strings.Trim(strings.TrimSpace(recipient), "<>"))
			}
			if addr == r.address {
				return r, true
			}
			continue
		}
		if dom == r.domain || !domain.IsLiteral(dom) && domain.IsSubdomain(dom, r.domain) {
			return r, true
		}
	}
	return rule{}, false
}

func (r rule) describe() string {
	if r.address != "" {
		return fmt.Sprintf("rule: address %s → %s", r.address, r.route)
	}
	return fmt.Sprintf("rule: domain %s → %s", r.domain, r.route)
}

func isNullMX(mx []lookup.MX) bool {
	return len(mx) == 1 && (mx[0].Host == "" || mx[0].Host == ".")
}

func mxList(mx []lookup.MX) string {
	var b strings.Builder
	for i, m := range mx {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d %s", m.Pref, m.Host)
	}
	return b.String()
}
