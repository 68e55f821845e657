package limits

import (
	"cmp"
	"hash/maphash"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// subjectSet computes, once per request, whom each key type names:
// "sasl_username:alice", "sender:bob@example.org", "client_address:192.0.2.1",
// "sender_domain:example.org", "local_user:www-data". A client in the
// trusted networks without a login is keyed by its sender where a limit
// asks for the login; mail a local account submitted (sendmail, pickup) by
// that account, and it has no client address (cleanup makes one up). ""
// means the key does not apply (no sender, a bounce, no local account).
type subjectSet struct {
	r       *Request
	trusted bool
	done    [len(keyTypes)]bool
	v       [len(keyTypes)]string
}

func subjects(r *Request, trusted bool) subjectSet { return subjectSet{r: r, trusted: trusted} }

func (s *subjectSet) of(k KeyType) string {
	i := slices.Index(keyTypes[:], k)
	if i < 0 {
		return ""
	}
	if !s.done[i] {
		s.v[i], s.done[i] = s.compute(k), true
	}
	return s.v[i]
}

func (s *subjectSet) compute(k KeyType) string {
	r := s.r
	switch k {
	case KeySASL:
		if r.SASLUsername != "" {
			return string(KeySASL) + ":" + r.SASLUsername
		}
		if r.LocalUser != "" {
			return s.of(KeyLocalUser)
		}
		return s.of(KeySender)
	case KeySender:
		if r.Sender != "" {
			return string(KeySender) + ":" + strings.ToLower(r.Sender)
		}
	case KeyClient:
		if r.ClientAddress != "" && r.LocalUser == "" {
			return string(KeyClient) + ":" + r.ClientAddress
		}
	case KeySenderDomain:
		if at := strings.LastIndexByte(r.Sender, '@'); at >= 0 && at < len(r.Sender)-1 {
			return string(KeySenderDomain) + ":" + strings.ToLower(r.Sender[at+1:])
		}
	case KeyLocalUser:
		if r.LocalUser != "" {
			return string(KeyLocalUser) + ":" + r.LocalUser
		}
	}
	return ""
}

// txn is one mail transaction, by its instance attribute.
type txn struct {
	mu        sync.Mutex // Postfix asks for one transaction at a time; this is for safety
	seen      time.Time  // under the table's lock
	counted   int        // recipients counted so far
	lastRcpt  string     // the last recipient counted at RCPT
	loginSeen bool       // the compromise signal ran
	joined    bool       // its queue id is joined to its account (failures.go)
	held      *verdict   // the hold that applies to the whole message
	queueID   string     // once known, for a held message
	taken     []taken    // what it counted, to give back if it is held

	// subj is what its last request's subjects were, for the next
	// request naming the same login, sender, client and local account
	// (subjOf).
	subj   subjectSet
	subjOf [4]string
}

// reuse fills s with the subjects an earlier request of the transaction
// computed, when it named the same login, sender, client and local
// account: a message's later requests then build no subject strings.
func (t *txn) reuse(s *subjectSet) {
	if t.subj.trusted == s.trusted && t.subjOf == [4]string{s.r.SASLUsername, s.r.Sender, s.r.ClientAddress, s.r.LocalUser} {
		r := s.r
		*s = t.subj
		s.r = r
	}
}

// keep remembers s's subjects for the transaction's next request.
func (t *txn) keep(s *subjectSet) {
	t.subj, t.subjOf = *s, [4]string{s.r.SASLUsername, s.r.Sender, s.r.ClientAddress, s.r.LocalUser}
	t.subj.r = nil
}

// key is the counter key of a limit (by its id) for subject s,
// "<id>|<subject>": the transaction's own copy when one of its requests
// counted there before, so that its later recipients allocate none.
func (t *txn) key(id, s string) string {
	if t != nil {
		for i := range t.taken {
			if k := t.taken[i].key; len(k) == len(id)+1+len(s) && k[len(id)] == '|' && k[:len(id)] == id && k[len(id)+1:] == s {
				return k
			}
		}
	}
	return id + "|" + s
}

type taking struct {
	key string
	n   int
	w   time.Duration
}

type taken struct {
	taking
	at time.Time
}

// took adds what one request counted.
func (t *txn) took(tk []taking, now time.Time) {
next:
	for _, k := range tk {
		for i := range t.taken {
			if t.taken[i].key == k.key {
				t.taken[i].n += k.n
				continue next
			}
		}
		t.taken = append(t.taken, taken{k, now})
	}
}

// giveBack returns to store what the transaction counted.
func (t *txn) giveBack(store Store) {
	for _, k := range t.taken {
		store.Give(k.key, k.n, k.w, k.at)
	}
	t.taken = nil
}

// txnIdle is how long a transaction is remembered after its last request;
// Postfix ends a session idle for 300s (smtpd_timeout).
const txnIdle = 10 * time.Minute

// maxTxns bounds the transactions remembered; beyond it new ones are
// counted at RCPT only (never twice).
const maxTxns = 100000

// shardedMap is a map by string spread over shards locks, so that
// requests of different transactions and senders do not wait on each
// other.
type shardedMap[V any] struct {
	seed   maphash.Seed
	shards [shards]mapShard[V]
}

type mapShard[V any] struct {
	mu sync.Mutex
	m  map[string]V
}

func (sm *shardedMap[V]) init() {
	sm.seed = maphash.MakeSeed()
	for i := range sm.shards {
		sm.shards[i].m = map[string]V{}
	}
}

func (sm *shardedMap[V]) shard(key string) *mapShard[V] {
	return &sm.shards[maphash.String(sm.seed, key)%shards]
}

// prune deletes the entries drop says to, one shard at a time.
func (sm *shardedMap[V]) prune(drop func(V) bool) {
	for i := range sm.shards {
		s := &sm.shards[i]
		s.mu.Lock()
		for k, v := range s.m {
			if drop(v) {
				delete(s.m, k)
			}
		}
		s.mu.Unlock()
	}
}

// txnTable holds the open transactions by instance.
type txnTable struct{ shardedMap[*txn] }

// get returns the transaction of instance, made if new; nil without an
// instance or when too many are open.
func (tt *txnTable) get(instance string, now time.Time) *txn {
	if instance == "" {
		return nil
	}
	s := tt.shard(instance)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.m[instance]
	if t == nil {
		if len(s.m) >= maxTxns/shards {
			return nil
		}
		t = &txn{}
		s.m[instance] = t
	}
	t.seen = now
	return t
}

// end forgets a finished transaction.
func (tt *txnTable) end(instance string) {
	s := tt.shard(instance)
	s.mu.Lock()
	delete(s.m, instance)
	s.mu.Unlock()
}

// pruneIdle forgets transactions idle since before now-txnIdle (aborted
// ones).
func (tt *txnTable) pruneIdle(now time.Time) {
	tt.prune(func(t *txn) bool { return now.Sub(t.seen) > txnIdle })
}

// topN keeps the most frequent of a stream in a fixed space (the
// Space-Saving algorithm): a new item when full replaces the least
// counted, inheriting its count. Items are told apart by a hash first:
// every recipient of a profile is added, and mail to many domains makes
// most adds a miss over all the entries.
type topN struct {
	size int
	e    [topSize]topEntry
}

type topEntry struct {
	h uint64
	n int
	s string
}

const topSize = 16

var topSeed = maphash.MakeSeed()

// item is a string to add with its hash, made once for every profile it
// is added to.
type item struct {
	s string
	h uint64
}

func newItem(s string) item { return item{s, maphash.String(topSeed, s)} }

func (t *topN) add(it item) {
	s, h := it.s, it.h
	if s == "" {
		return
	}
	e := t.e[:t.size]
	for i := range e {
		if e[i].h == h && e[i].s == s {
			e[i].n++
			return
		}
	}
	if t.size < topSize {
		t.e[t.size] = topEntry{h: h, n: 1, s: strings.Clone(s)}
		t.size++
		return
	}
	m := 0
	for i := range e {
		if e[i].n < e[m].n {
			m = i
		}
	}
	e[m] = topEntry{h: h, n: e[m].n + 1, s: strings.Clone(s)}
}

// String lists the first few, most frequent first: "gmail.com (40), example.org (3)".
func (t *topN) String() string {
	e := slices.Clone(t.e[:t.size])
	slices.SortStableFunc(e, func(a, b topEntry) int { return cmp.Compare(b.n, a.n) })
	var parts []string
	for _, x := range e[:min(len(e), 5)] {
		parts = append(parts, x.s+" ("+strconv.Itoa(x.n)+")")
	}
	return strings.Join(parts, ", ")
}

// profile is what a subject did lately, for the alert.
type profile struct {
	last    time.Time
	dests   topN // recipient domains
	clients topN // client addresses
}

type profileView struct{ destinations, clients string }

// profileTable holds the profiles by subject; every counted request
// records into it.
type profileTable struct{ shardedMap[*profile] }

// record notes the request's recipient domain and client for each subject
// a limit (or the compromise signal) counts. A request of the milter
// (Request.Destinations) brings all its message's recipient domains at
// once.
func (pt *profileTable) record(o *Options, subj *subjectSet, r *Request, client string, now time.Time) {
	var dom string
	if r.Stage == "RCPT" {
		if at := strings.LastIndexByte(r.Recipient, '@'); at >= 0 {
			dom = strings.ToLower(r.Recipient[at+1:])
		}
	}
	var seen [len(keyTypes)]bool
	d, c := newItem(dom), newItem(client)
	var more []item
	for f := range strings.FieldsSeq(r.Destinations) {
		if len(more) == topSize {
			break
		}
		more = append(more, newItem(strings.ToLower(f)))
	}
	for i := range o.Limits {
		pt.note(o.Limits[i].Key, &seen, subj, d, c, more, now)
	}
	if o.Compromise.Window > 0 && r.SASLUsername != "" {
		pt.note(KeySASL, &seen, subj, d, c, more, now)
	}
}

// note records for the subject of key type k, once per request and
// subject (a login's limit counts mail without a login by sender or
// local account, which the sender's or the account's limits count too).
func (pt *profileTable) note(k KeyType, seen *[len(keyTypes)]bool, subj *subjectSet, dom, client item, more []item, now time.Time) {
	i := slices.Index(keyTypes[:], k)
	if i < 0 || seen[i] {
		return
	}
	seen[i] = true
	s := subj.of(k)
	if s == "" {
		return
	}
	for j, done := range seen { // noted earlier in this request: already recorded
		if done && j != i && subj.done[j] && subj.v[j] == s {
			return
		}
	}
	sh := pt.shard(s)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	p := sh.m[s]
	if p == nil {
		p = &profile{}
		sh.m[strings.Clone(s)] = p
	}
	p.last = now
	p.dests.add(dom)
	for _, d := range more {
		p.dests.add(d)
	}
	p.clients.add(client)
}

func (pt *profileTable) snapshot(subject string) profileView {
	sh := pt.shard(subject)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	p := sh.m[subject]
	if p == nil {
		return profileView{}
	}
	return profileView{destinations: p.dests.String(), clients: p.clients.String()}
}

func (pt *profileTable) forget(subject string) {
	sh := pt.shard(subject)
	sh.mu.Lock()
	delete(sh.m, subject)
	sh.mu.Unlock()
}

// pruneIdle forgets profiles idle for longer than keep.
func (pt *profileTable) pruneIdle(now time.Time, keep time.Duration) {
	pt.prune(func(p *profile) bool { return now.Sub(p.last) > keep })
}

// Held is a message the limiter held, by queue id, for `holds`.
type Held struct {
	QueueID string    `json:"queue_id"`
	Key     string    `json:"key"`    // "sasl_username:alice"
	Limit   string    `json:"limit"`  // "sasl_username limit"
	Reason  string    `json:"reason"` // the action Postfix was given
	At      time.Time `json:"at"`
}

// heldKeep and maxHeld bound the held records: a message released or
// deleted by hand leaves its record until then.
const (
	heldKeep = 30 * 24 * time.Hour
	maxHeld  = 20000
)

type heldLog struct {
	mu sync.Mutex
	m  map[string]Held
}

func (h *heldLog) init() { h.m = map[string]Held{} }

func (h *heldLog) add(r Held) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.m) >= maxHeld {
		var oldest string
		for id, x := range h.m {
			if oldest == "" || x.At.Before(h.m[oldest].At) {
				oldest = id
			}
		}
		delete(h.m, oldest)
	}
	h.m[r.QueueID] = r
}

func (h *heldLog) forget(subject string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, x := range h.m {
		if x.Key == subject {
			delete(h.m, id)
		}
	}
}

func (h *heldLog) list() []Held {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Held, 0, len(h.m))
	for _, x := range h.m {
		out = append(out, x)
	}
	slices.SortFunc(out, func(a, b Held) int { return a.At.Compare(b.At) })
	return out
}

func (h *heldLog) prune(now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, x := range h.m {
		if now.Sub(x.At) > heldKeep {
			delete(h.m, id)
		}
	}
}
