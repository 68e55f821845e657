package dkim

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/statefile"
)

// Key rotation
//
// Selectors are named BASE + a generation number: "mail", "mail2",
// "mail3", or "rsa2026", "rsa2027". The keys of one domain with the same
// algorithm and BASE form a family; `keygen -next` writes the family's
// next generation. In a family of several keys:
//
//   - a key signs only once its record has been seen published (the
//     doctor's key check, run by the milter every RotationCheckInterval);
//     until the newest key is, the older ones go on signing;
//   - the newest published key is the current one; the older keys sign
//     beside it for the overlap ([milter.dkim] rotation_overlap) after it
//     was first seen published, then stop;
//   - once they stopped, their records can go: every message still queued
//     then (Postfix gives up after maximal_queue_lifetime, 5 days, under
//     the default overlap of 7) also carries the current key's signature.
//
// A family of one key signs as before, published or not (the doctor says
// when it is not). When the first sighting of each key was is kept in a
// small JSON file, so that a restart does not start the overlap anew and
// the doctor can say when an old record may go.

// RotationCheckInterval is how often the milter looks for new records.
const RotationCheckInterval = 10 * time.Minute

// Rotation keeps when each key's record was first seen published and
// picks the keys that sign. It is safe for concurrent use.
type Rotation struct {
	overlap  time.Duration
	path     string // "" = memory only
	readOnly bool
	// alternate: selectors alternate (s1, s2, s1, ...), a retired key
	// waits for the next key to be written over it ([milter.dkim]
	// rotation_selectors = "alternate").
	alternate bool
	log       *zap.Logger
	now       func() time.Time

	mu     sync.RWMutex
	seen   map[string]time.Time // KeyID -> first seen published
	said   map[string]string    // family -> last phase logged
	failed bool                 // the state file could not be written (logged once)
}

// NewRotation returns the milter's rotation, its state loaded from path
// ("" keeps it in memory only). A missing file is an empty state; an
// unreadable one is logged and treated as empty: rotation then waits for
// the next check, it never loses mail.
func NewRotation(overlap time.Duration, path string, log *zap.Logger) *Rotation {
	r := &Rotation{overlap: overlap, path: path, log: log, now: time.Now, seen: map[string]time.Time{}, said: map[string]string{}}
	if err := r.load(); err != nil {
		log.Warn("dkim rotation state unreadable; starting afresh", zap.String("file", path), zap.Error(err))
	}
	return r
}

// ReadRotation reads the state the milter keeps, for the doctor, which
// never writes it.
func ReadRotation(overlap time.Duration, path string) (*Rotation, error) {
	r := &Rotation{overlap: overlap, path: path, readOnly: true, log: zap.NewNop(), now: time.Now,
		seen: map[string]time.Time{}, said: map[string]string{}}
	return r, r.load()
}

// ReadOnlyRotation is a rotation that has seen no record, and keeps
// nothing: what a milter without a state file starts with.
func ReadOnlyRotation(overlap time.Duration) *Rotation {
	return &Rotation{overlap: overlap, readOnly: true, log: zap.NewNop(), now: time.Now,
		seen: map[string]time.Time{}, said: map[string]string{}}
}

// Alternate sets the two-selector mode: a retired key is on standby for
// the next rotation, not a record to remove. It returns r.
func (r *Rotation) Alternate(on bool) *Rotation {
	if r != nil {
		r.alternate = on
	}
	return r
}

// Overlap is how long old keys sign beside a new one.
func (r *Rotation) Overlap() time.Duration { return r.overlap }

func (r *Rotation) load() error {
	if r.path == "" {
		return nil
	}
	data, err := os.ReadFile(r.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st struct {
		Seen map[string]time.Time `json:"published_since"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("%s: %w", r.path, err)
	}
	for k, v := range st.Seen {
		r.seen[k] = v
	}
	return nil
}

// save writes the state atomically; called with r.mu held.
func (r *Rotation) save() {
	if r.path == "" || r.readOnly {
		return
	}
	data, _ := json.MarshalIndent(struct {
		Seen map[string]time.Time `json:"published_since"`
	}{r.seen}, "", "  ")
	err := statefile.Write(r.path, append(data, '\n'))
	if err != nil && !r.failed {
		r.failed = true
		r.log.Warn("cannot keep the dkim rotation state; a restart will start the overlap anew",
			zap.String("file", r.path), zap.String("fix", "make "+filepath.Dir(r.path)+" writable by the milter's user"), zap.Error(err))
	}
}

// KeyID names a key's record and its key material: a regenerated key
// under an old selector is a new key.
func KeyID(k *Key) string {
	der, _ := x509.MarshalPKIXPublicKey(k.Signer.Public())
	sum := sha256.Sum256(der)
	return k.Selector + "._domainkey." + k.Domain + "/" + hex.EncodeToString(sum[:8])
}

// Published records that k's record was seen matching the key at t (the
// first sighting is kept).
func (r *Rotation) Published(k *Key, t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := KeyID(k)
	if _, ok := r.seen[id]; ok {
		return
	}
	r.seen[id] = t
	r.save()
}

// Since returns when k's record was first seen published.
func (r *Rotation) Since(k *Key) (time.Time, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.seen[KeyID(k)]
	return t, ok
}

// SelectorGeneration splits a selector into its base and generation:
// "mail3" is ("mail", 3), "mail" is ("mail", 1).
func SelectorGeneration(sel string) (base string, gen uint64) {
	i := len(sel)
	for i > 0 && sel[i-1] >= '0' && sel[i-1] <= '9' {
		i--
	}
	if i == len(sel) {
		return sel, 1
	}
	n, err := strconv.ParseUint(sel[i:], 10, 64)
	if err != nil {
		return sel, 1
	}
	return sel[:i], n
}

// NextSelector is the selector of the generation after sel's: "mail" →
// "mail2", "mail2" → "mail3", "rsa2026" → "rsa2027".
func NextSelector(sel string) string {
	base, gen := SelectorGeneration(sel)
	return base + strconv.FormatUint(gen+1, 10)
}

// Families groups keys (of one domain or many) by domain, algorithm and
// selector base, each family in generation order, oldest first.
func Families(keys []*Key) [][]*Key {
	idx := map[string]int{}
	var out [][]*Key
	for _, k := range keys {
		base, _ := SelectorGeneration(k.Selector)
		f := k.Domain + "/" + k.Algorithm + "/" + strings.ToLower(base)
		i, ok := idx[f]
		if !ok {
			i = len(out)
			idx[f] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], k)
	}
	for _, fam := range out {
		slices.SortStableFunc(fam, func(a, b *Key) int {
			_, ga := SelectorGeneration(a.Selector)
			_, gb := SelectorGeneration(b.Selector)
			return cmpUint(ga, gb)
		})
	}
	return out
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Phase is where a family stands in its rotation.
type Phase struct {
	Current *Key      // the key every message is signed with
	Old     []*Key    // older keys still signing beside Current (until Until)
	Retired []*Key    // older keys that no longer sign: their records can go
	Pending []*Key    // newer keys whose records were not seen yet
	Since   time.Time // when Current was first seen published; zero when never
	Until   time.Time // Old keys stop signing then; zero when no key was seen
}

// Signing is the keys that sign in this phase: Current and Old.
func (p Phase) Signing() []*Key { return append([]*Key{p.Current}, p.Old...) }

// PhaseOf says where fam (one family, oldest generation first) stands
// at now. A key's place in its rotation is when its record was first
// seen published, not its selector: in the two-selector mode (selectors
// that alternate, s1 → s2 → s1, each new key written over the retired
// one) the newest key may have the lower generation. The generation only
// orders keys seen at the same check, and picks the signer before any
// record was seen. A key not seen published never signs beside one that
// was.
func (r *Rotation) PhaseOf(fam []*Key, now time.Time) Phase {
	type sighting struct {
		k     *Key
		since time.Time
	}
	var seen []sighting
	var unseen []*Key
	for _, k := range fam {
		if t, ok := r.Since(k); ok {
			seen = append(seen, sighting{k, t})
		} else {
			unseen = append(unseen, k)
		}
	}
	if len(seen) == 0 || len(fam) == 1 {
		// Nothing seen yet (or nothing to rotate): the oldest key signs
		// as it did before the newer ones were added.
		p := Phase{Current: fam[0], Pending: fam[1:]}
		if len(seen) == 1 {
			p.Since = seen[0].since
		}
		return p
	}
	// fam is in generation order, and the sort is stable: equal times
	// keep it.
	slices.SortStableFunc(seen, func(a, b sighting) int { return a.since.Compare(b.since) })
	cur := seen[len(seen)-1]
	p := Phase{Current: cur.k, Pending: unseen, Since: cur.since, Until: cur.since.Add(r.overlap)}
	for _, o := range seen[:len(seen)-1] {
		if now.Before(p.Until) {
			p.Old = append(p.Old, o.k)
		} else {
			p.Retired = append(p.Retired, o.k)
		}
	}
	return p
}

// Signers returns those of keys (all of one signing domain) that sign
// now. A nil Rotation lets every key sign.
func (r *Rotation) Signers(keys []*Key) []*Key {
	if r == nil || len(keys) < 2 {
		return keys
	}
	now := r.now()
	fams := Families(keys)
	if len(fams) == len(keys) {
		return keys // no family in rotation
	}
	var out []*Key
	for _, fam := range fams {
		out = append(out, r.PhaseOf(fam, now).Signing()...)
	}
	// Keep the table's order, so that signatures come in config order.
	slices.SortStableFunc(out, func(a, b *Key) int { return slices.Index(keys, a) - slices.Index(keys, b) })
	return out
}

// Check looks up the record of every key of t through res, as the
// doctor does, records the keys first seen published and logs each
// change of a family's phase: when a new key starts signing, until when
// the old one signs beside it, and when the old record can go.
func (r *Rotation) Check(ctx context.Context, res lookup.Resolver, t *Table) {
	now := r.now()
	for _, fam := range Families(t.Keys()) {
		if len(fam) < 2 {
			continue
		}
		for _, k := range fam {
			if _, ok := r.Since(k); ok {
				continue
			}
			if f := CheckKey(ctx, res, k); f.Matches {
				r.Published(k, now)
			}
		}
		r.logPhase(fam, now)
	}
}

func (r *Rotation) logPhase(fam []*Key, now time.Time) {
	p := r.PhaseOf(fam, now)
	var phase, say string
	d := fam[0].Domain
	switch {
	case len(p.Old) > 0:
		phase = "overlap " + p.Current.Selector
		after := "the records of " + selectors(p.Old) + " can go after that"
		if r.alternate {
			after = selectors(p.Old) + " then waits, on standby, for the next rotation"
		}
		say = (fmt.Sprintf("%s is published: signing with %s and %s until %s, then %s alone; %s",
			recordName(p.Current), p.Current.Selector, selectors(p.Old), p.Until.Format(time.RFC3339), p.Current.Selector, after))
	case len(p.Retired) > 0 && r.alternate:
		phase = "standby " + p.Current.Selector
		say = (fmt.Sprintf("%s no longer signs since %s: its selector waits for the next rotation (keygen -next writes the new key over it); keep its record, or the CNAME to it, as it is",
			selectors(p.Retired), p.Until.Format(time.RFC3339)))
	case len(p.Retired) > 0:
		phase = "retired " + p.Current.Selector
		say = (fmt.Sprintf("%s no longer signs since %s: remove the TXT records of %s and their [[milter.dkim.keys]] rows",
			selectors(p.Retired), p.Until.Format(time.RFC3339), names(p.Retired)))
	case len(p.Pending) > 0:
		phase = "pending " + p.Current.Selector
		say = (fmt.Sprintf("%s is not published yet: signing with %s until it is; publish it (mxdetour-milter doctor prints the record)",
			names(p.Pending), p.Current.Selector))
	}
	key := d + "/" + p.Current.Algorithm + "/" + fam[0].Selector
	r.mu.Lock()
	changed := r.said[key] != phase
	r.said[key] = phase
	r.mu.Unlock()
	if changed && phase != "" {
		r.log.Info("dkim rotation: "+say, zap.String("domain", d))
	}
}

// Run checks at once and then every interval until ctx ends; table
// returns the key table in use (it changes at reload).
func (r *Rotation) Run(ctx context.Context, res lookup.Resolver, table func() *Table, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		r.Check(cctx, res, table())
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func recordName(k *Key) string { return k.Selector + "._domainkey." + k.Domain }

func selectors(ks []*Key) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = k.Selector
	}
	return strings.Join(s, ", ")
}

func names(ks []*Key) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = recordName(k)
	}
	return strings.Join(s, ", ")
}

// Keys returns every key of the table, by domain, in config order within
// a domain.
func (t *Table) Keys() []*Key {
	if t == nil {
		return nil
	}
	doms := make([]string, 0, len(t.byDomain))
	for d := range t.byDomain {
		doms = append(doms, d)
	}
	slices.Sort(doms)
	var out []*Key
	for _, d := range doms {
		out = append(out, t.byDomain[d]...)
	}
	return out
}
