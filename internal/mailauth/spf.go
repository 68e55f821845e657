package mailauth

import (
	"context"
	"net"
	"net/netip"

	"blitiri.com.ar/go/spf"

	"github.com/mxdetour/mxdetour/internal/lookup"
)

// SPF evaluates domain's SPF record for mail from ip with the HELO name
// helo (RFC 7208 section 4), every mechanism included: include, redirect,
// a, mx, ptr, exists, ip4, ip6, all, macros, and the limits of section
// 4.6.4 (10 DNS-querying terms, 2 void lookups). The result is one of
// spf's results ("pass", "fail", "softfail", "neutral", "none",
// "temperror", "permerror"); err says why, for the log.
func SPF(ctx context.Context, res lookup.Resolver, ip netip.Addr, domain, helo string) (spf.Result, error) {
	return spf.CheckHostWithSender(net.IP(ip.AsSlice()), helo, "postmaster@"+domain,
		spf.WithContext(ctx), spf.WithResolver(resolver{res}))
}

// resolver answers spf's questions through a lookup.Resolver. spf tells
// "no such name" and "try later" apart by *net.DNSError's flags.
type resolver struct{ r lookup.Resolver }

func dnsErr(name string, r lookup.Result) error {
	switch r.Status {
	case lookup.NXDomain:
		return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	case lookup.TempFail:
		msg := "temporary failure"
		if r.Err != nil {
			msg = r.Err.Error()
		}
		return &net.DNSError{Err: msg, Name: name, IsTemporary: true}
	}
	return nil // Answer, NoData
}

func (a resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	r := a.r.TXT(ctx, name)
	return r.TXT, dnsErr(name, r)
}

func (a resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	r := a.r.MX(ctx, name)
	if err := dnsErr(name, r); err != nil {
		return nil, err
	}
	out := make([]*net.MX, 0, len(r.MX))
	for _, m := range r.MX {
		if m.Host != "" { // a null MX (RFC 7505) names no host
			out = append(out, &net.MX{Host: m.Host + ".", Pref: m.Pref})
		}
	}
	return out, nil
}

func (a resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	var out []net.IPAddr
	var firstErr error
	nx := 0
	for _, r := range []lookup.Result{a.r.A(ctx, host), a.r.AAAA(ctx, host)} {
		if r.Status == lookup.NXDomain {
			nx++
		}
		if err := dnsErr(host, r); err != nil && r.Status == lookup.TempFail && firstErr == nil {
			firstErr = err
		}
		for _, ip := range r.Addrs {
			out = append(out, net.IPAddr{IP: net.IP(ip.AsSlice())})
		}
	}
	switch {
	case len(out) > 0:
		return out, nil
	case firstErr != nil:
		return nil, firstErr
	case nx > 0:
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return nil, nil
}

func (a resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "not an address", Name: addr, IsNotFound: true}
	}
	r := a.r.PTR(ctx, ip)
	if err := dnsErr(addr, r); err != nil {
		return nil, err
	}
	out := make([]string, len(r.Names))
	for i, n := range r.Names {
		out[i] = n + "."
	}
	return out, nil
}
