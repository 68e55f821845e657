// Package dnsbl queries DNS blocklists as RFC 5782 describes: the address,
// reversed (octets for IPv4, nibbles for IPv6), under the list's zone; an A
// answer in 127.0.0.0/8 means listed, NXDOMAIN means not listed.
//
// Answers are three-state. Error codes that lists return instead of a
// listing (Spamhaus' 127.255.255.0/24: typo, query through a public
// resolver, too many queries, DQS key problems) and lookup failures are
// Unknown, never Listed; so is every answer of a zone that lists 127.0.0.1,
// its RFC 5782 section 5 test entry for "not listed".
package dnsbl

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup"
)

// State is what a list says of an address.
type State int

const (
	Unknown State = iota
	Clean
	Listed
)

func (s State) String() string {
	switch s {
	case Clean:
		return "clean"
	case Listed:
		return "listed"
	}
	return "unknown"
}

// Result is one address checked against one zone.
type Result struct {
	Zone    string
	Addr    netip.Addr
	State   State
	Codes   []netip.Addr
	Reason  string // the list's TXT record, when listed
	Err     error
	Checked time.Time
}

var loopback = netip.MustParsePrefix("127.0.0.0/8")

// Query checks ip against zone. errorCodes are answers that mean an error
// of the list, not a listing.
func Query(ctx context.Context, r lookup.Resolver, zone string, ip netip.Addr, errorCodes []netip.Prefix) Result {
	ip = ip.Unmap()
	res := Result{Zone: zone, Addr: ip, Checked: time.Now()}
	name := lookup.ReverseName(ip) + "." + zone
	a := r.A(ctx, name)
	switch a.Status {
	case lookup.NXDomain, lookup.NoData:
		res.State = Clean
		return res
	case lookup.TempFail:
		res.Err = fmt.Errorf("%s: %w", zone, a.Err)
		return res
	}
	res.Codes = a.Addrs
	var errs []string
	for _, code := range a.Addrs {
		switch {
		case inAny(code, errorCodes):
			errs = append(errs, code.String())
		case loopback.Contains(code):
			res.State = Listed
		default:
			errs = append(errs, code.String()+" (outside 127.0.0.0/8)")
		}
	}
	if res.State != Listed {
		res.Err = fmt.Errorf("%s answered error code %s, not a listing", zone, strings.Join(errs, ", "))
		return res
	}
	if txt := r.TXT(ctx, name); txt.Status == lookup.Answer {
		res.Reason = strings.Join(txt.TXT, "; ")
	}
	return res
}

func inAny(a netip.Addr, prefixes []netip.Prefix) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ZoneHealthy checks a zone's RFC 5782 section 5 test entry for "not
// listed": 127.0.0.1 must not be listed. A zone that lists it (a lapsed
// domain answering "listed" for everything) cannot be trusted.
func ZoneHealthy(ctx context.Context, r lookup.Resolver, zone string, errorCodes []netip.Prefix) (bool, error) {
	if Query(ctx, r, zone, netip.MustParseAddr("127.0.0.1"), errorCodes).State == Listed {
		return false, fmt.Errorf("%s lists 127.0.0.1, its test entry for \"not listed\": treating its answers as unknown", zone)
	}
	return true, nil
}
