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
// each domain in one of two slots its hash names, a newer domain taking
// the slot that expires first: its size never grows, whatever domains
// clients send, and reading it takes no lock. (With one slot a domain, a
// hundred busy domains have a few pairs sharing one, which then push each
// other out on every request.)
type factsMemo struct {
	seed  maphash.Seed
	slots [1024]atomic.Pointer[facts]
}

func newFactsMemo() *factsMemo { return &factsMemo{seed: maphash.MakeSeed()} }

// slots2 returns the two slots where domain may be.
func (m *factsMemo) slots2(domain string) (*atomic.Pointer[facts], *atomic.Pointer[facts]) {
	h := maphash.String(m.seed, domain)
	n := uint64(len(m.slots))
	return &m.slots[h%n], &m.slots[(h>>32)%n]
}

// get returns the facts of domain while they are fresh at now, else nil.
func (m *factsMemo) get(domain string, now time.Time) *facts {
	a, b := m.slots2(domain)
	for _, s := range [2]*atomic.Pointer[facts]{a, b} {
		if f := s.Load(); f != nil && f.domain == domain {
			if now.Before(f.until) {
				return f
			}
			return nil
		}
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
	f := &facts{domain: domain, mx: mx, match: match, until: now.Add(min(factsFor, mx.TTL))}
	a, b := m.slots2(domain)
	fa, fb := a.Load(), b.Load()
	switch {
	case fa == nil || fa.domain == domain:
	case fb == nil || fb.domain == domain:
		a = b
	case fb.until.Before(fa.until):
		a = b
	}
	a.Store(f)
}
