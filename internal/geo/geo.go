// Package geo maps a client's IP address to a country for the milter's
// country block, from one of three sources: a MaxMind-format database
// (GeoLite2-Country, DB-IP Lite), RIR delegated statistics files (the
// registration country, RIR Statistics Exchange Format), or a DNS
// service answering Team Cymru-style TXT records. An unknown address is
// "" — the block fails open.
//
// A Blocker applies a rule table (Rule, Policy) to a client address:
// rules match by network, country or origin AS (package asn), in the
// order written, the first match deciding (allow, refuse, or log only).
package geo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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

// Built is the database's build epoch.
func (m *MMDB) Built() time.Time { return time.Unix(int64(m.db.Metadata.BuildEpoch), 0) }

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

// Blocker applies the rule table of [milter.geo] (Policy).
//
// A Blocker owns its source and closes it (an MMDB is a file mapping)
// once it is closed itself and no Check is using the source any more: a
// reference count, one per open Blocker sharing the source (Reuse) and
// one per Check in flight. A grace period would be simpler but only
// probably safe: a lookup in an unmapped database crashes the daemon.
// A Check that starts after Close answers ErrClosed without touching the
// source, and the caller asks the Blocker now in use.
type Blocker struct {
	sh     *shared // nil without a source
	policy Policy
	closed atomic.Bool
}

// ErrClosed is Check's answer from a Blocker already closed (a reload
// replaced it): ask the current one.
var ErrClosed = errors.New("geo: country block replaced by a reload")

// shared is a source and the count of its users.
type shared struct {
	src  Source
	refs atomic.Int64 // open Blockers using src + Checks in flight
	once sync.Once
}

func (s *shared) acquire() { s.refs.Add(1) }

// release closes the source when its last user lets go.
func (s *shared) release() {
	if s.refs.Add(-1) == 0 {
		s.once.Do(func() {
			if c, ok := s.src.(io.Closer); ok {
				_ = c.Close()
			}
		})
	}
}

// NewBlocker returns a Blocker deciding with p; without rules it refuses
// nothing, and without a source rules match by network and AS only. The
// Blocker owns src: Close closes it.
func NewBlocker(src Source, p Policy) *Blocker {
	b := &Blocker{policy: p}
	if src != nil {
		b.sh = &shared{src: src}
		b.sh.acquire()
	}
	return b
}

// Reuse returns a Blocker with b's source and a new policy: a reload whose
// new source fails to open keeps the one in use. Call it before b is
// closed (the source is closed when both are).
func (b *Blocker) Reuse(p Policy) *Blocker {
	nb := &Blocker{policy: p}
	if b != nil && b.sh != nil && !b.closed.Load() {
		b.sh.acquire()
		nb.sh = b.sh
	}
	return nb
}

// HasSource reports whether b has a country source.
func (b *Blocker) HasSource() bool { return b != nil && b.sh != nil }

// Close gives up b's source: it is closed now, or when the last Check
// using it returns. Later Checks answer ErrClosed. Close twice is harmless.
func (b *Blocker) Close() {
	if b != nil && b.sh != nil && b.closed.CompareAndSwap(false, true) {
		b.sh.release()
	}
}

// Active reports whether any rule can match: by network, by AS with a
// lookup, by country with a source.
func (b *Blocker) Active() bool {
	if b == nil {
		return false
	}
	return slices.ContainsFunc(b.policy.Rules, func(r Rule) bool {
		return len(r.Networks) > 0 || (len(r.ASNs) > 0 && b.policy.ASN != nil) || (len(r.Countries) > 0 && b.sh != nil)
	})
}

// Check runs the rules for ip. Addresses in the exempt list and invalid
// ones match no rule; a lookup error is returned with a verdict that
// admits (fail open). After Close it answers ErrClosed.
func (b *Blocker) Check(ctx context.Context, ip netip.Addr) (Verdict, error) {
	none := Verdict{Rule: -1}
	if !b.Active() || !ip.IsValid() {
		return none, nil
	}
	ip = ip.Unmap()
	for _, p := range b.policy.Exempt {
		if p.Contains(ip) {
			return none, nil
		}
	}
	f := &facts{ip: ip, asnFn: b.policy.ASN}
	if b.sh != nil {
		// Count this Check before looking at closed: a Close in between
		// then either is seen here, or waits for this release to close
		// the source.
		b.sh.acquire()
		defer b.sh.release()
		if b.closed.Load() {
			return none, ErrClosed
		}
		f.src = b.sh.src
	}
	return b.policy.evaluate(ctx, f)
}

// Dated is a source that knows when its data was made.
type Dated interface {
	Built() time.Time
}

// Built is when the country data in use was made (an mmdb's build epoch,
// the date in a delegated file's header or else its modification time);
// zero when unknown (no source, or a DNS service).
func (b *Blocker) Built() time.Time {
	if b == nil || b.sh == nil {
		return time.Time{}
	}
	if d, ok := b.sh.src.(Dated); ok {
		return d.Built()
	}
	return time.Time{}
}

// Stale reports the age of the country data at now and whether it is
// older than maxAge (0: never stale). Data of unknown age is never stale.
func (b *Blocker) Stale(maxAge time.Duration, now time.Time) (age time.Duration, stale bool) {
	t := b.Built()
	if t.IsZero() {
		return 0, false
	}
	age = now.Sub(t)
	return age, maxAge > 0 && age > maxAge
}

// Guarded is a Source that may be closed while lookups are in flight, as
// a reload closes the country data it replaced: Close closes the source it
// wraps once the last lookup using it returns (an MMDB is a file mapping:
// a lookup in an unmapped database crashes the daemon). A lookup that
// starts after Close answers ErrClosed without touching the source.
type Guarded struct {
	sh     *shared
	closed atomic.Bool
}

// Guard returns src, closed by the Guarded's Close.
func Guard(src Source) *Guarded {
	g := &Guarded{sh: &shared{src: src}}
	g.sh.acquire()
	return g
}

// Country asks the source, unless g is closed.
func (g *Guarded) Country(ctx context.Context, ip netip.Addr) (string, error) {
	g.sh.acquire()
	defer g.sh.release()
	if g.closed.Load() {
		return "", ErrClosed
	}
	return g.sh.src.Country(ctx, ip)
}

// Close gives up the source: closed now, or when the last lookup using it
// returns. Close twice is harmless.
func (g *Guarded) Close() error {
	if g.closed.CompareAndSwap(false, true) {
		g.sh.release()
	}
	return nil
}
