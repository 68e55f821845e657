// Package geo maps a client's IP address to a country for the milter's
// country block, from one of three sources: a MaxMind-format database
// (GeoLite2-Country, DB-IP Lite), RIR delegated statistics files (the
// registration country, RIR Statistics Exchange Format), or a DNS
// service answering Team Cymru-style TXT records. An unknown address is
// "" — the block fails open.
package geo

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/oschwald/maxminddb-golang/v2"

	"github.com/mxdetour/mxdetour/internal/asn"
	"github.com/mxdetour/mxdetour/internal/lookup"
)

// Source finds the country of an address: an ISO 3166 code, "" if unknown.
type Source interface {
	Country(ctx context.Context, ip netip.Addr) (string, error)
}

// Options name a country source.
type Options struct {
	Source         string   // "", "mmdb", "delegated" or "dns"
	MMDBFile       string   // for "mmdb"
	DelegatedFiles []string // for "delegated"
	DNSZone        string   // for "dns": TXT "ASN | prefix | CC | ..." for IPv4
	DNS6Zone       string   // ... and for IPv6
}

// Open opens the source o names; nil when none is. r answers the "dns"
// source's lookups.
func Open(c Options, r lookup.Resolver) (Source, error) {
	switch c.Source {
	case "":
		return nil, nil
	case "mmdb":
		return OpenMMDB(c.MMDBFile)
	case "delegated":
		return LoadDelegated(c.DelegatedFiles...)
	case "dns":
		return NewDNS(r, c.DNSZone, c.DNS6Zone), nil
	}
	return nil, fmt.Errorf("geo: unknown source %q", c.Source)
}

// MMDB is a MaxMind-format country database.
type MMDB struct{ db *maxminddb.Reader }

// OpenMMDB opens the database at path.
func OpenMMDB(path string) (*MMDB, error) {
	db, err := maxminddb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("country database %s: %w", path, err)
	}
	return &MMDB{db: db}, nil
}

// Close releases the database.
func (m *MMDB) Close() error { return m.db.Close() }

type mmdbRecord struct {
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	RegisteredCountry struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"registered_country"`
}

// Country reads country.iso_code, else registered_country.iso_code.
func (m *MMDB) Country(_ context.Context, ip netip.Addr) (string, error) {
	res := m.db.Lookup(ip.Unmap())
	if err := res.Err(); err != nil {
		return "", err
	}
	if !res.Found() {
		return "", nil
	}
	var rec mmdbRecord
	if err := res.Decode(&rec); err != nil {
		return "", err
	}
	if rec.Country.ISOCode != "" {
		return strings.ToUpper(rec.Country.ISOCode), nil
	}
	return strings.ToUpper(rec.RegisteredCountry.ISOCode), nil
}

// DNS asks a Team Cymru-style TXT service, through the shared cache.
type DNS struct {
	r            lookup.Resolver
	zone4, zone6 string
}

// NewDNS returns a DNS source.
func NewDNS(r lookup.Resolver, zone4, zone6 string) *DNS { return &DNS{r, zone4, zone6} }

// Country returns the registration country of ip's prefix.
func (d *DNS) Country(ctx context.Context, ip netip.Addr) (string, error) {
	o, st, err := asn.Lookup(ctx, d.r, d.zone4, d.zone6, ip)
	switch st {
	case lookup.Answer:
		return o.Country, nil
	case lookup.TempFail:
		return "", err
	}
	return "", nil
}

// Blocker applies the configured country block.
type Blocker struct {
	src       Source
	countries []string
	allow     []netip.Prefix
}

// NewBlocker returns a Blocker refusing the countries (ISO 3166 alpha-2,
// upper case) except for addresses in allow; with no source or no
// countries it blocks nothing.
func NewBlocker(src Source, countries []string, allow []netip.Prefix) *Blocker {
	return &Blocker{src: src, countries: countries, allow: allow}
}

// Active reports whether any country is blocked.
func (b *Blocker) Active() bool { return b != nil && b.src != nil && len(b.countries) > 0 }

// Check reports whether ip is in a blocked country (and which). Addresses
// in the allow list, unknown addresses and lookup errors are not blocked.
func (b *Blocker) Check(ctx context.Context, ip netip.Addr) (blocked bool, cc string, err error) {
	if !b.Active() || !ip.IsValid() {
		return false, "", nil
	}
	ip = ip.Unmap()
	for _, p := range b.allow {
		if p.Contains(ip) {
			return false, "", nil
		}
	}
	cc, err = b.src.Country(ctx, ip)
	if err != nil || cc == "" {
		return false, cc, err
	}
	return slices.Contains(b.countries, cc), cc, nil
}
