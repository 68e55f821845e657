// Package asn finds the network (origin AS) and registration country of an
// IP address through a DNS TXT service in the Team Cymru format:
//
//	<reversed address>.origin.asn.cymru.com TXT "15169 | 8.8.8.0/24 | US | arin | 1992-12-01"
//
// IPv4 addresses use reversed octets, IPv6 addresses reversed nibbles
// (as RFC 5782 does for blocklists), under a zone of their own.
package asn

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/mxdetour/mxdetour/internal/lookup"
)

// Origin is what the service says of an address.
type Origin struct {
	ASNs     []uint32
	Prefix   netip.Prefix
	Country  string // ISO 3166 code of the registration, upper case
	Registry string
}

// ParseTXT reads one TXT answer. Trailing fields may be missing; the first
// must hold at least one AS number.
func ParseTXT(s string) (Origin, error) {
	fields := strings.Split(s, "|")
	for i := range fields {
		fields[i] = strings.TrimSpace(fields[i])
	}
	var o Origin
	for _, a := range strings.Fields(fields[0]) {
		n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToUpper(a), "AS"), 10, 32)
		if err != nil {
			return Origin{}, fmt.Errorf("asn: %q: bad AS number %q", s, a)
		}
		o.ASNs = append(o.ASNs, uint32(n))
	}
	if len(o.ASNs) == 0 {
		return Origin{}, fmt.Errorf("asn: %q: no AS number", s)
	}
	if len(fields) > 1 && fields[1] != "" {
		p, err := netip.ParsePrefix(fields[1])
		if err != nil {
			return Origin{}, fmt.Errorf("asn: %q: bad prefix: %w", s, err)
		}
		o.Prefix = p
	}
	if len(fields) > 2 {
		o.Country = strings.ToUpper(fields[2])
	}
	if len(fields) > 3 {
		o.Registry = fields[3]
	}
	return o, nil
}

// ErrNoAnswer is returned when the service has no usable record.
var ErrNoAnswer = errors.New("asn: no usable answer")

// Lookup asks the service about ip: zone4 for IPv4, zone6 for IPv6. When
// several records answer, the most specific prefix wins.
func Lookup(ctx context.Context, r lookup.Resolver, zone4, zone6 string, ip netip.Addr) (Origin, lookup.Status, error) {
	ip = ip.Unmap()
	zone := zone4
	if ip.Is6() {
		zone = zone6
	}
	if zone == "" {
		return Origin{}, lookup.NoData, ErrNoAnswer
	}
	res := r.TXT(ctx, lookup.ReverseName(ip)+"."+zone)
	if res.Status != lookup.Answer {
		return Origin{}, res.Status, res.Err
	}
	var best Origin
	found := false
	for _, t := range res.TXT {
		o, err := ParseTXT(t)
		if err != nil {
			continue
		}
		if !found || o.Prefix.Bits() > best.Prefix.Bits() {
			best, found = o, true
		}
	}
	if !found {
		return Origin{}, lookup.NoData, ErrNoAnswer
	}
	return best, lookup.Answer, nil
}
