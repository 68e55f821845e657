// Package dnsbl queries DNS blocklists as RFC 5782 describes: the address,
// reversed (octets for IPv4, nibbles for IPv6), under the list's zone; an A
// answer in 127.0.0.0/8 means listed, NXDOMAIN means not listed.
//
// Answers are three-state. Error codes that lists return instead of a
// listing (Spamhaus' 127.255.255.0/24: typo, query through a public
// resolver, too many queries) and lookup failures are Unknown, never
// Listed. A "not listed" is only believed from a zone that passes its
// RFC 5782 section 5 test points (CheckZone): 127.0.0.2 listed, 127.0.0.1
// not. Without them, a resolver that answers NXDOMAIN to every name would
// read as "clean" everywhere.
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

// Cause says why a state is Unknown, in words fit for a metric label; ""
// when the state is known.
type Cause string

const (
	// CauseLookupFailed: timeouts, SERVFAIL, no resolver reachable.
	CauseLookupFailed Cause = "lookup-failed"
	// CauseErrorCode: the list answered one of its error codes (or an
	// address outside 127.0.0.0/8) instead of a listing.
	CauseErrorCode Cause = "error-code"
	// CauseNXDomainForAll: even the zone's top-level domain is NXDOMAIN:
	// the resolver answers NXDOMAIN to every name.
	CauseNXDomainForAll Cause = "nxdomain-for-everything"
	// CauseZoneMissing: the zone's own name is NXDOMAIN while its
	// top-level domain exists: the list is gone, or the zone misspelt.
	CauseZoneMissing Cause = "zone-missing"
	// CauseNoTestEntry: the zone exists but does not list 127.0.0.2: it is
	// no longer published, or hides its answers from this resolver.
	CauseNoTestEntry Cause = "test-entry-missing"
	// CauseListsEverything: the zone lists 127.0.0.1, its entry for "not
	// listed" (a lapsed domain answering "listed" to everything).
	CauseListsEverything Cause = "lists-everything"
)

// Result is one address checked against one zone.
type Result struct {
	Zone    string
	Addr    netip.Addr
	State   State
	Cause   Cause // why State is Unknown
	Codes   []netip.Addr
	Reason  string // the list's TXT record, when listed
	Err     error  // why State is Unknown, for a person
	Checked time.Time
	// Known is the state the last check that learned anything found:
	// Listed or Clean, and Unknown only while nothing was ever learned.
	// Routing goes by it (Monitor.Listing), so a check that learns
	// nothing changes no route.
	Known State
}

var loopback = netip.MustParsePrefix("127.0.0.0/8")

// Query checks ip against zone. errorCodes are answers that mean an error
// of the list, not a listing. It does not check the zone's test points:
// CheckZone does, and Monitor believes Query only on a zone that passed.
func Query(ctx context.Context, r lookup.Resolver, zone string, ip netip.Addr, errorCodes []netip.Prefix) Result {
	ip = ip.Unmap()
	res := query(ctx, r, zone, lookup.ReverseName(ip)+"."+zone, errorCodes)
	res.Addr = ip
	return res
}

// query asks for name, an entry of zone.
func query(ctx context.Context, r lookup.Resolver, zone, name string, errorCodes []netip.Prefix) Result {
	res := Result{Zone: zone, Checked: time.Now()}
	a := r.A(ctx, name)
	switch a.Status {
	case lookup.NXDomain, lookup.NoData:
		res.State = Clean
		return res
	case lookup.TempFail:
		res.Cause, res.Err = CauseLookupFailed, fmt.Errorf("%s: %w", zone, a.Err)
		return res
	}
	res.Codes = a.Addrs
	var errs []string
	for _, code := range a.Addrs {
		switch {
		case inAny(code, errorCodes):
			errs = append(errs, code.String()+meaning(code))
		case loopback.Contains(code):
			res.State = Listed
		default:
			errs = append(errs, code.String()+" (outside 127.0.0.0/8)")
		}
	}
	if res.State != Listed {
		res.Cause = CauseErrorCode
		res.Err = fmt.Errorf("%s answered error code %s, not a listing", zone, strings.Join(errs, ", "))
		return res
	}
	if txt := r.TXT(ctx, name); txt.Status == lookup.Answer {
		res.Reason = strings.Join(txt.TXT, "; ")
	}
	return res
}

// spamhausCodes are the error codes Spamhaus documents in its DNSBL usage
// FAQ (127.255.255.0/24, the default [dnsbl] error_codes).
var spamhausCodes = map[netip.Addr]string{
	netip.MustParseAddr("127.255.255.252"): "typing error in the zone name",
	netip.MustParseAddr("127.255.255.254"): "query through a public or open resolver: refused",
	netip.MustParseAddr("127.255.255.255"): "excessive number of queries: refused",
}

func meaning(code netip.Addr) string {
	if m, ok := spamhausCodes[code]; ok {
		return " (Spamhaus: " + m + ")"
	}
	return ""
}

func inAny(a netip.Addr, prefixes []netip.Prefix) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
