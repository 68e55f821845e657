package dnsbl

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup"
)

// ZoneHealth is what a zone's RFC 5782 section 5 test points said at one
// check. A zone that fails them cannot say "not listed" (nor "listed") of
// anything: Cause and Err say why.
type ZoneHealth struct {
	Zone    string
	Cause   Cause        // "" when the zone passed
	Err     error        // Cause for a person, in full
	Codes   []netip.Addr // the error codes answered, for CauseErrorCode
	Checked time.Time
}

// OK reports whether the zone passed its test points.
func (z ZoneHealth) OK() bool { return z.Cause == "" }

// Why is the likely cause in a few words, for an alert's summary.
func (z ZoneHealth) Why() string {
	switch z.Cause {
	case "":
		return "it passes its test points"
	case CauseLookupFailed:
		return "its lookups fail (timeout or SERVFAIL)"
	case CauseErrorCode:
		var codes []string
		for _, c := range z.Codes {
			codes = append(codes, c.String()+meaning(c))
		}
		return "it answers error code " + strings.Join(codes, ", ")
	case CauseNXDomainForAll:
		return "the resolver answers NXDOMAIN for everything"
	case CauseZoneMissing:
		return "the zone does not exist (dead or misspelt)"
	case CauseNoTestEntry:
		return "it does not list its test entry 127.0.0.2 (zone dead, or the resolver refused)"
	case CauseListsEverything:
		return "it lists everything, 127.0.0.1 included"
	}
	return string(z.Cause)
}

// The test points of RFC 5782 section 5: an IPv4 list must list 127.0.0.2
// and must not list 127.0.0.1; an IPv6 list the same as IPv4-mapped IPv6
// addresses, queried in nibbles. Zones such as zen.spamhaus.org answer both
// families with the IPv4 entries; a list that serves only IPv6 passes on
// its IPv6 pair.
var (
	testListed     = netip.MustParseAddr("127.0.0.2")
	testNotListed  = netip.MustParseAddr("127.0.0.1")
	testListed6    = netip.MustParseAddr("::ffff:7f00:2")
	testNotListed6 = netip.MustParseAddr("::ffff:7f00:1")
)

// CheckZone checks zone's test points: its test entry for "listed" must be
// listed and the one for "not listed" not. When the first is missing it
// tells the likely cause apart by two more questions: does the zone's own
// name exist, and does its top-level domain.
func CheckZone(ctx context.Context, r lookup.Resolver, zone string, errorCodes []netip.Prefix) ZoneHealth {
	h := ZoneHealth{Zone: zone, Checked: time.Now()}
	fail := func(c Cause, err error) ZoneHealth {
		h.Cause, h.Err = c, err
		return h
	}
	listed, notListed := testListed, testNotListed
	pos := query(ctx, r, zone, lookup.ReverseName(listed)+"."+zone, errorCodes)
	if pos.State == Clean {
		if pos6 := query(ctx, r, zone, lookup.ReverseNibbles(testListed6)+"."+zone, errorCodes); pos6.State == Listed {
			pos, listed, notListed = pos6, testListed6, testNotListed6
		}
	}
	switch pos.State {
	case Unknown:
		h.Codes = pos.Codes
		return fail(pos.Cause, fmt.Errorf("test entry %s: %w", listed, pos.Err))
	case Clean:
		c, err := missingTestEntry(ctx, r, zone)
		return fail(c, err)
	}
	name := lookup.ReverseName(notListed) + "." + zone
	if notListed.Is4In6() {
		name = lookup.ReverseNibbles(notListed) + "." + zone
	}
	switch neg := query(ctx, r, zone, name, errorCodes); neg.State {
	case Unknown:
		h.Codes = neg.Codes
		return fail(neg.Cause, fmt.Errorf("test entry %s: %w", notListed, neg.Err))
	case Listed:
		return fail(CauseListsEverything, fmt.Errorf("%s lists %s, its test entry for \"not listed\": it answers \"listed\" to everything (a lapsed domain?)", zone, notListed))
	}
	return h
}

// missingTestEntry explains a zone that does not list 127.0.0.2.
func missingTestEntry(ctx context.Context, r lookup.Resolver, zone string) (Cause, error) {
	apex := r.A(ctx, zone)
	switch apex.Status {
	case lookup.TempFail:
		return CauseLookupFailed, fmt.Errorf("%s does not list its test entry 127.0.0.2, and asking for the zone itself failed: %w", zone, apex.Err)
	case lookup.Answer, lookup.NoData:
		return CauseNoTestEntry, fmt.Errorf("%s does not list its test entry 127.0.0.2 (RFC 5782 section 5) though the zone exists: the list is no longer published, or hides its answers from this resolver", zone)
	}
	if i := strings.LastIndexByte(zone, '.'); i > 0 {
		tld := zone[i+1:]
		if r.A(ctx, tld).Status == lookup.NXDomain {
			return CauseNXDomainForAll, fmt.Errorf("the resolver answers NXDOMAIN for %s's test entry, for the zone itself and even for the top-level domain %q: it answers NXDOMAIN to everything; use a resolver that answers blocklist queries", zone, tld)
		}
	}
	return CauseZoneMissing, fmt.Errorf("%s does not exist (NXDOMAIN), nor its test entry 127.0.0.2: the list is gone or the zone name is misspelt", zone)
}
