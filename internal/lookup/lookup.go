// Package lookup is the one DNS library of mxdetour: MX, A/AAAA, TXT and PTR
// over miekg/dns with a cache that honours TTLs and RFC 2308 negative
// caching, serves stale answers while the resolvers fail (RFC 8767), and
// merges identical queries in flight into one upstream query.
//
// Cache rules:
//   - a positive answer lives for the smallest TTL of its RRset, clamped to
//     [MinTTL, MaxTTL];
//   - NXDOMAIN and NODATA live for min(SOA TTL, SOA minimum) of the
//     authority section (RFC 2308 section 5), capped at NegativeMaxTTL, or
//     ErrorTTL when the answer carries no SOA;
//   - SERVFAIL, REFUSED and timeouts live for ErrorTTL, so a failing name
//     is not asked again on every request;
//   - an expired answer is kept StaleTTL longer and served, marked Stale,
//     when its refresh fails (RFC 8767 section 4);
//   - the caller's context bounds its wait, not the query: a query sent
//     upstream finishes in the background and fills the cache.
package lookup

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/miekg/dns"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// Client is a caching resolver. It implements Resolver.
type Client struct {
	servers                               []string
	timeout                               time.Duration
	attempts                              int
	minTTL, maxTTL, negMax, errTTL, stale time.Duration

	cache *lru.Cache[cacheKey, *entry]
	group singleflight.Group
	log   *zap.Logger
	now   func() time.Time

	hits, misses, upstream, errs, staleServed atomic.Uint64
	answered, upstreamErrs                    atomic.Uint64 // per query sent: answered, or not
}

type cacheKey struct {
	qtype uint16
	name  string // canonical: lower case, trailing dot
}

// entry is a cached result; expires is when it stops being fresh.
type entry struct {
	res        Result
	expires    time.Time
	staleUntil time.Time // served when upstream fails until then (RFC 8767)
}

// Options are the resolvers and the cache rules of a Client (see the
// package comment for what each TTL means).
type Options struct {
	Servers        []string      // host or host:port; empty = nameservers of /etc/resolv.conf
	Timeout        time.Duration // per query attempt
	Attempts       int           // per query, at least 1
	CacheSize      int           // entries, at least 1
	MinTTL, MaxTTL time.Duration // clamp of positive answers
	NegativeMaxTTL time.Duration // cap on NXDOMAIN/NODATA (RFC 2308)
	ErrorTTL       time.Duration // SERVFAIL, REFUSED, timeouts
	StaleTTL       time.Duration // how long an expired answer may be served while upstream fails (RFC 8767)
}

// New returns a Client for o. Without servers it uses the nameservers of
// /etc/resolv.conf.
func New(o Options, log *zap.Logger) (*Client, error) {
	servers := slices.Clone(o.Servers)
	if len(servers) == 0 {
		var err error
		if servers, err = ResolvConf("/etc/resolv.conf"); err != nil {
			return nil, err
		}
	}
	for i, s := range servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			servers[i] = net.JoinHostPort(s, "53")
		}
	}
	cache, err := lru.New[cacheKey, *entry](max(o.CacheSize, 1))
	if err != nil {
		return nil, err
	}
	return &Client{
		servers: servers, timeout: o.Timeout, attempts: max(o.Attempts, 1),
		minTTL: o.MinTTL, maxTTL: o.MaxTTL, negMax: o.NegativeMaxTTL,
		errTTL: o.ErrorTTL, stale: o.StaleTTL,
		cache: cache, log: log, now: time.Now,
	}, nil
}

// ResolvConf returns the nameservers of a resolv.conf file as host:port.
func ResolvConf(path string) ([]string, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("dns: reading %s: %w", path, err)
	}
	if len(cc.Servers) == 0 {
		return nil, fmt.Errorf("dns: no nameserver in %s", path)
	}
	out := make([]string, len(cc.Servers))
	for i, s := range cc.Servers {
		out[i] = net.JoinHostPort(s, cc.Port)
	}
	return out, nil
}

// Stats returns the counters.
func (c *Client) Stats() Stats {
	return Stats{Hits: c.hits.Load(), Misses: c.misses.Load(), Upstream: c.upstream.Load(),
		Errors: c.errs.Load(), Stale: c.staleServed.Load(), Entries: c.cache.Len(),
		Answered: c.answered.Load(), UpstreamErrors: c.upstreamErrs.Load()}
}

// MX looks up the mail exchangers of domain.
func (c *Client) MX(ctx context.Context, domain string) Result {
	return c.lookup(ctx, domain, dns.TypeMX)
}

// A looks up IPv4 addresses.
func (c *Client) A(ctx context.Context, name string) Result { return c.lookup(ctx, name, dns.TypeA) }

// AAAA looks up IPv6 addresses.
func (c *Client) AAAA(ctx context.Context, name string) Result {
	return c.lookup(ctx, name, dns.TypeAAAA)
}

// TXT looks up text records.
func (c *Client) TXT(ctx context.Context, name string) Result {
	return c.lookup(ctx, name, dns.TypeTXT)
}

// PTR looks up the names of an address.
func (c *Client) PTR(ctx context.Context, addr netip.Addr) Result {
	suffix := ".in-addr.arpa"
	if addr.Unmap().Is6() {
		suffix = ".ip6.arpa"
	}
	return c.lookup(ctx, ReverseName(addr)+suffix, dns.TypePTR)
}

// canonical returns name in cache-key form, allocating only when needed.
func canonical(name string) string {
	if n := len(name); n > 0 && name[n-1] == '.' && isLower(name) {
		return name
	}
	if isLower(name) {
		return name + "."
	}
	return dns.CanonicalName(name)
}

func isLower(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return false
		}
	}
	return true
}

func (c *Client) lookup(ctx context.Context, name string, qtype uint16) Result {
	k := cacheKey{qtype, canonical(name)}
	if r, ok := c.fresh(k, c.cache.Get); ok {
		c.hits.Add(1)
		return r
	}
	c.misses.Add(1)
	ch := c.group.DoChan(k.name+"/"+dns.TypeToString[qtype], func() (any, error) {
		// A flight that ended between our cache miss and this one's
		// start has filled the cache: answer from it, not upstream.
		if r, ok := c.fresh(k, c.cache.Peek); ok {
			return r, nil
		}
		return c.refresh(k), nil
	})
	select {
	case v := <-ch:
		return v.Val.(Result)
	case <-ctx.Done():
		c.errs.Add(1)
		return Result{Status: TempFail, Err: fmt.Errorf("%s %s: %w", dns.TypeToString[qtype], name, ctx.Err())}
	}
}

// fresh returns k's cached result while it has not expired; get is the
// cache's Get (a lookup: counts as recent use) or Peek (a flight's second
// look: does not).
func (c *Client) fresh(k cacheKey, get func(cacheKey) (*entry, bool)) (Result, bool) {
	e, ok := get(k)
	if !ok {
		return Result{}, false
	}
	now := c.now()
	if !now.Before(e.expires) {
		return Result{}, false
	}
	r := e.res
	r.Cached, r.TTL = true, e.expires.Sub(now)
	return r, true
}

// refresh asks upstream, stores the outcome and returns what the caller
// gets: the fresh result, or a stale one when upstream failed.
func (c *Client) refresh(k cacheKey) Result {
	start := c.now()
	res, ttl := c.query(k)
	now := c.now()
	if res.Status == TempFail {
		c.errs.Add(1)
		if old, ok := c.cache.Peek(k); ok && old.res.Status != TempFail && now.Before(old.staleUntil) {
			c.staleServed.Add(1)
			r := old.res
			r.Stale, r.Cached, r.TTL = true, true, 0
			// Serve it for a short while without asking again, but never
			// past its stale bound.
			c.cache.Add(k, &entry{res: r, expires: minTime(now.Add(c.errTTL), old.staleUntil), staleUntil: old.staleUntil})
			c.debug(k, r, now.Sub(start))
			return r
		}
	}
	e := &entry{res: res, expires: now.Add(ttl)}
	if res.Status != TempFail {
		e.staleUntil = e.expires.Add(c.stale)
	}
	c.cache.Add(k, e)
	res.TTL = ttl
	c.debug(k, res, now.Sub(start))
	return res
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func (c *Client) debug(k cacheKey, r Result, d time.Duration) {
	if ce := c.log.Check(zap.DebugLevel, "dns lookup"); ce != nil {
		ce.Write(zap.String("name", k.name), zap.String("type", dns.TypeToString[k.qtype]),
			zap.Stringer("status", r.Status), zap.Bool("stale", r.Stale), zap.Duration("took", d), zap.Error(r.Err))
	}
}

// query sends k upstream: each attempt tries every server in turn, over
// UDP with EDNS0 and over TCP when the answer was truncated.
func (c *Client) query(k cacheKey) (Result, time.Duration) {
	m := new(dns.Msg)
	m.SetQuestion(k.name, k.qtype)
	m.RecursionDesired = true
	m.SetEdns0(1232, false)
	var lastErr error
	for range c.attempts {
		for _, srv := range c.servers {
			c.upstream.Add(1)
			resp, err := c.exchange(m, srv)
			if err != nil {
				c.upstreamErrs.Add(1)
				lastErr = err
				continue
			}
			switch resp.Rcode {
			case dns.RcodeSuccess, dns.RcodeNameError:
				c.answered.Add(1)
				return c.interpret(k, resp)
			default:
				c.upstreamErrs.Add(1)
				lastErr = fmt.Errorf("%s from %s", dns.RcodeToString[resp.Rcode], srv)
			}
		}
	}
	return Result{Status: TempFail, Err: fmt.Errorf("%s %s: %w", dns.TypeToString[k.qtype], strings.TrimSuffix(k.name, "."), lastErr)}, c.errTTL
}

func (c *Client) exchange(m *dns.Msg, srv string) (*dns.Msg, error) {
	udp := &dns.Client{Net: "udp", Timeout: c.timeout, UDPSize: 1232}
	resp, _, err := udp.Exchange(m, srv)
	if err != nil {
		return nil, err
	}
	if !resp.Truncated {
		return resp, nil
	}
	tcp := &dns.Client{Net: "tcp", Timeout: c.timeout}
	resp, _, err = tcp.Exchange(m, srv)
	return resp, err
}

// interpret turns a NOERROR or NXDOMAIN response into a Result and its
// cache lifetime.
func (c *Client) interpret(k cacheKey, resp *dns.Msg) (Result, time.Duration) {
	if resp.Rcode == dns.RcodeNameError {
		return Result{Status: NXDomain}, c.negativeTTL(resp)
	}
	var r Result
	minTTL := uint32(1<<32 - 1)
	for _, rr := range resp.Answer {
		ok := true
		switch v := rr.(type) {
		case *dns.MX:
			host := strings.ToLower(strings.TrimSuffix(v.Mx, "."))
			r.MX = append(r.MX, MX{Host: host, Pref: v.Preference})
		case *dns.A:
			if a, ok2 := netip.AddrFromSlice(v.A.To4()); ok2 {
				r.Addrs = append(r.Addrs, a)
			}
		case *dns.AAAA:
			if a, ok2 := netip.AddrFromSlice(v.AAAA); ok2 {
				r.Addrs = append(r.Addrs, a)
			}
		case *dns.TXT:
			r.TXT = append(r.TXT, strings.Join(v.Txt, ""))
		case *dns.PTR:
			r.Names = append(r.Names, strings.ToLower(strings.TrimSuffix(v.Ptr, ".")))
		default:
			ok = false // CNAMEs on the way, other types
		}
		if ok || rr.Header().Rrtype == dns.TypeCNAME {
			minTTL = min(minTTL, rr.Header().Ttl)
		}
	}
	if len(r.MX)+len(r.Addrs)+len(r.TXT)+len(r.Names) == 0 {
		return Result{Status: NoData}, c.negativeTTL(resp)
	}
	slices.SortFunc(r.MX, func(a, b MX) int {
		if a.Pref != b.Pref {
			return int(a.Pref) - int(b.Pref)
		}
		return strings.Compare(a.Host, b.Host)
	})
	r.Status = Answer
	ttl := time.Duration(minTTL) * time.Second
	return r, min(max(ttl, c.minTTL), c.maxTTL)
}

// negativeTTL applies RFC 2308 section 5: the SOA's TTL or its minimum,
// whichever is less, capped by the configuration.
func (c *Client) negativeTTL(resp *dns.Msg) time.Duration {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			ttl := time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
			return min(ttl, c.negMax)
		}
	}
	return c.errTTL
}

// ReverseName returns the RFC 5782 / RFC 1035 reverse form of ip without a
// zone: reversed octets for IPv4, reversed nibbles for IPv6.
func ReverseName(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is4() {
		a := ip.As4()
		return fmt.Sprintf("%d.%d.%d.%d", a[3], a[2], a[1], a[0])
	}
	return ReverseNibbles(ip)
}

// ReverseNibbles returns the reversed nibbles of ip as 16 bytes, without
// a zone; an IPv4(-mapped) address stays mapped (::ffff:7f00:2), as
// RFC 5782 §5's IPv6 test points are written.
func ReverseNibbles(ip netip.Addr) string {
	a := ip.As16()
	const hex = "0123456789abcdef"
	b := make([]byte, 0, 63)
	for i := 15; i >= 0; i-- {
		b = append(b, hex[a[i]&0xf], '.', hex[a[i]>>4], '.')
	}
	return string(b[:len(b)-1])
}
