package lookup

import (
	"context"
	"net/netip"
	"time"
)

// Status says which kind of answer a lookup got. Callers must tell them
// apart: NXDomain and NoData are facts about the name (RFC 2308), TempFail
// is our failure to learn anything (SERVFAIL, timeout, no server reachable).
type Status uint8

const (
	Answer   Status = iota // records found
	NXDomain               // the name does not exist
	NoData                 // the name exists, but has no records of this type
	TempFail               // nothing learned; try again later
)

func (s Status) String() string {
	switch s {
	case Answer:
		return "answer"
	case NXDomain:
		return "nxdomain"
	case NoData:
		return "nodata"
	case TempFail:
		return "tempfail"
	}
	return "unknown"
}

// MX is one mail exchanger. Host is lower case without the trailing dot;
// a null MX (RFC 7505) is Host "" with Pref 0.
type MX struct {
	Host string
	Pref uint16
}

// Result is the outcome of one lookup. The slices are shared with the cache:
// callers must not modify them.
type Result struct {
	Status Status
	MX     []MX         // MX lookups, sorted by preference then host
	Addrs  []netip.Addr // A and AAAA lookups
	TXT    []string     // TXT lookups: the strings of each record joined
	Names  []string     // PTR lookups: lower case, no trailing dot
	TTL    time.Duration
	Cached bool  // answered from the cache
	Stale  bool  // an expired answer served because upstream failed (RFC 8767)
	Err    error // for TempFail: what went wrong, for the log
}

// Resolver is the DNS seam of mxdetour: every DNS question both daemons ask
// goes through one. Names may be given with or without the trailing dot and
// in any case. The context bounds how long the caller waits; a query already
// sent upstream goes on in the background and fills the cache.
type Resolver interface {
	MX(ctx context.Context, domain string) Result
	A(ctx context.Context, name string) Result
	AAAA(ctx context.Context, name string) Result
	TXT(ctx context.Context, name string) Result
	PTR(ctx context.Context, addr netip.Addr) Result
}

// Stats are the cache's counters since start. Hits and Misses count
// lookups; Upstream counts queries sent to a nameserver, Answered and
// UpstreamErrors how those ended (NOERROR or NXDOMAIN; anything else);
// Errors counts lookups that ended without an answer, Stale the stale
// answers served instead.
type Stats struct {
	Hits, Misses, Upstream, Errors, Stale uint64
	Answered, UpstreamErrors              uint64
	Entries                               int
}
