package route

import (
	"hash/maphash"
	"sync/atomic"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/provider"
)

// factsFor is how long the DNS facts of a domain are kept beside the
// lookup cache, at most: at thousands of requests a second for a few busy
// domains, the MX lookup and the provider's recognition (the MX host's
// name, else its address's network: up to three more lookups) are most of
// a decision's cost. One second (never past the MX answer's TTL) is below
// anything DNS promises, and the learned blocks and our listings, which
// change by the second, are still read on every request.
const factsFor = time.Second

// facts is what DNS said of a domain's mail: its MX lookup and the
// provider that answer belongs to.
type facts struct {
	domain string
	mx     lookup.Result
	match  provider.Match
	until  time.Time
}

// factsMemo keeps the facts of recently decided domains in a fixed table,
// one slot per hash, the newer domain taking a shared slot: its size never
// grows, whatever domains clients send, and reading it takes no lock.
type factsMemo struct {
	seed  maphash.Seed
	slots [1024]atomic.Pointer[facts]
}

func newFactsMemo() *factsMemo { return &factsMemo{seed: maphash.MakeSeed()} }

func (m *factsMemo) slot(domain string) *atomic.Pointer[facts] {
	return &m.slots[maphash.String(m.seed, domain)%uint64(len(m.slots))]
}

// get returns the facts of domain while they are fresh at now, else nil.
func (m *factsMemo) get(domain string, now time.Time) *facts {
	if f := m.slot(domain).Load(); f != nil && f.domain == domain && now.Before(f.until) {
		return f
	}
	return nil
}

// put keeps a complete answer: an MX lookup answered (records, or none
// at all), and a recognition that needed no failed lookup. Stale answers
// (TTL 0) are not kept, so that a resolver back from failure is asked at
// once.
func (m *factsMemo) put(domain string, mx lookup.Result, match provider.Match, now time.Time) {
	if mx.Status != lookup.Answer && mx.Status != lookup.NoData || match.Err != nil || mx.TTL <= 0 {
		return
	}
	m.slot(domain).Store(&facts{domain: domain, mx: mx, match: match, until: now.Add(min(factsFor, mx.TTL))})
}
