package learn

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/policyd/block"
)

// Block is a learned refusal of our sending IP; the type lives in
// policyd/block so that policyd/route can use it without this package.
type Block = block.Block

// Offset is where reading the delivery log stopped.
type Offset struct {
	Path  string `json:"path"`
	Inode uint64 `json:"inode"`
	Pos   int64  `json:"pos"`
}

// JournalPos is where reading the journal stopped: the cursor of the
// last record read (journalctl --after-cursor), and when it was logged.
type JournalPos struct {
	Cursor string    `json:"cursor"`
	Time   time.Time `json:"time"`
}

// Forgotten records that a person dropped the block of Domain at At
// (`blocks forget`). It is how another process tells the daemon
// "forgotten" from "learned but not yet saved": the state file carries it
// until Until (when the forgotten block would have expired), and every
// store that merges the file drops its copy of that block if the block was
// last seen before At. A refusal seen after At makes a new block.
type Forgotten struct {
	Domain string    `json:"domain"`
	At     time.Time `json:"at"`
	Until  time.Time `json:"until"`
}

const maxQueueIDs = 50

// Store holds learned blocks in memory and in a state file that survives
// restarts. It is safe for concurrent use; Lookup is the hot path.
//
// Memory is the authority: reading the file (Reload, and before every
// Save when another process changed it) merges the file into memory. A
// block the file has is added, a block the file lacks is kept, and a block
// the file says was forgotten (Forgotten) is dropped.
type Store struct {
	path string
	log  *zap.Logger

	mu       sync.RWMutex
	byDomain map[string]*Block
	byHost   map[string][]*Block // a host shared by several domains has a block of each
	// byProvider holds the provider-wide blocks (Block.ProviderWide) by
	// provider name: each applies to every destination of that provider.
	byProvider map[string][]*Block
	forgotten  map[string]Forgotten
	offset     Offset
	journal    JournalPos

	fileMu sync.Mutex // held across a read-merge-write of the file
	seen   fileID     // the state file as we last read or wrote it; under fileMu

	onLearn atomic.Pointer[func(Block)] // told of each change learned from our own log
	unsaved atomic.Bool                 // Merge or ForgetAt changed memory: save at the next tick
}

// OpenStore reads the state file at path. A missing file is an empty
// store. A file that cannot be read or parsed is set aside (renamed
// PATH.corrupt-TIME) with an error log and its previous copy PATH.1 is
// used; when that is bad too the store starts empty. Losing learned blocks
// must never stop the daemon: the error is always nil today.
func OpenStore(path string, log *zap.Logger) (*Store, error) {
	s := &Store{path: path, log: log, byDomain: map[string]*Block{}, byHost: map[string][]*Block{},
		byProvider: map[string][]*Block{}, forgotten: map[string]Forgotten{}}
	return s, s.Reload()
}

// Reload merges the state file into memory (SIGHUP). Blocks learned since
// the last save are kept; blocks forgotten in the file are dropped.
func (s *Store) Reload() error {
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	if dir, err := lockDir(filepath.Dir(s.path)); err == nil {
		defer dir.Close()
	} else if !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("reading the state file without its lock", zap.Error(err))
	}
	s.load()
	return nil
}

// Refresh merges the state file into memory if another process changed
// it since we last read or wrote it (`blocks forget`).
func (s *Store) Refresh() error {
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	if statID(s.path) == s.seen {
		return nil
	}
	dir, err := lockDir(filepath.Dir(s.path))
	if err != nil {
		return fmt.Errorf("state file %s: %w", s.path, err)
	}
	defer dir.Close()
	s.load()
	return nil
}

// load reads the state file, or its previous copy when it is bad, and
// merges it into memory. The caller holds fileMu and the directory lock.
func (s *Store) load() {
	st, id, err := readState(s.path)
	s.seen = id
	switch {
	case err == nil:
		s.merge(st)
		return
	case errors.Is(err, fs.ErrNotExist):
		if _, err := os.Stat(s.path + ".1"); err != nil {
			return // a first start
		}
		s.log.Warn("state file missing; using its previous copy", zap.String("file", s.path))
	default:
		aside, rerr := setAside(s.path, time.Now())
		s.log.Error("state file unreadable or corrupt; set aside, using its previous copy",
			zap.String("file", s.path), zap.Error(err), zap.String("moved_to", aside), zap.NamedError("rename", rerr))
	}
	prev := s.path + ".1"
	st, _, err = readState(prev)
	if err == nil {
		s.merge(st)
		s.log.Warn("learned blocks restored from the previous state file", zap.String("file", prev),
			zap.Int("blocks", len(st.Blocks)))
		return
	}
	aside, rerr := "", error(nil)
	if !errors.Is(err, fs.ErrNotExist) {
		aside, rerr = setAside(prev, time.Now())
	}
	s.log.Error("no usable state file: learned blocks are lost; starting with what is in memory",
		zap.String("file", prev), zap.Error(err), zap.String("moved_to", aside), zap.NamedError("rename", rerr),
		zap.Int("blocks_in_memory", s.count()))
}

// merge adds what st knows to memory: its tombstones, its blocks not
// forgotten, its log offset when we have none.
func (s *Store) merge(st *stateFile) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range st.Forgotten {
		if old, ok := s.forgotten[f.Domain]; now.Before(f.Until) && (!ok || f.At.After(old.At)) {
			s.forgotten[f.Domain] = f
		}
	}
	for d, f := range s.forgotten {
		if b, ok := s.byDomain[d]; ok && !b.LastSeen().After(f.At) {
			s.unindex(b)
			s.log.Info("learned block forgotten (blocks forget)", zap.String("domain", d), zap.Time("at", f.At))
		}
	}
	for _, b := range st.Blocks {
		if b.Active(now) {
			s.addLocked(b)
		}
	}
	if s.offset == (Offset{}) {
		s.offset = st.Offset
	}
	if s.journal == (JournalPos{}) && st.Journal != nil {
		s.journal = *st.Journal
	}
}

func (s *Store) count() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.byDomain)
}

func (s *Store) index(b *Block) {
	s.byDomain[b.Domain] = b
	if b.MXHost != "" && b.MXHost != "none" {
		s.byHost[b.MXHost] = append(s.byHost[b.MXHost], b)
	}
	if b.ProviderWide() {
		s.byProvider[b.Provider] = append(s.byProvider[b.Provider], b)
	}
}

func (s *Store) unindex(b *Block) {
	if s.byDomain[b.Domain] == b {
		delete(s.byDomain, b.Domain)
	}
	s.unindexHost(b.MXHost, func(o *Block) bool { return o == b })
	s.unindexProvider(b.Provider, func(o *Block) bool { return o == b })
}

// unindexHost drops the blocks of host for which drop is true.
func (s *Store) unindexHost(host string, drop func(*Block) bool) {
	bs := slices.DeleteFunc(s.byHost[host], drop)
	if len(bs) == 0 {
		delete(s.byHost, host)
		return
	}
	s.byHost[host] = bs
}

// unindexProvider drops the provider-wide blocks of provider for which
// drop is true.
func (s *Store) unindexProvider(provider string, drop func(*Block) bool) {
	bs, ok := s.byProvider[provider]
	if !ok {
		return
	}
	if bs = slices.DeleteFunc(bs, drop); len(bs) == 0 {
		delete(s.byProvider, provider)
		return
	}
	s.byProvider[provider] = bs
}

// Lookup returns a block, not expired at now, for domain or for one of its
// MX hosts (learned from any domain that uses that host). Where several
// apply, a block that needs the relay wins over one that needs only IPv4:
// a destination that refuses our IPv4 and our IPv6 addresses needs the
// relay.
func (s *Store) Lookup(domain string, mxHosts []string, now time.Time) (Block, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var found *Block
	consider := func(b *Block) bool {
		if !b.Active(now) {
			return false
		}
		if found == nil || (found.IPv6Only() && !b.IPv6Only()) {
			found = b
		}
		return !found.IPv6Only()
	}
	if b, ok := s.byDomain[domain]; ok && consider(b) {
		return *found, true
	}
	for _, h := range mxHosts {
		for _, b := range s.byHost[h] {
			if consider(b) {
				return *found, true
			}
		}
	}
	if found == nil {
		return Block{}, false
	}
	return *found, true
}

// LookupProvider returns a provider-wide block of provider (a refusal of
// our address or network across the provider, learned from any of its
// destinations), not expired at now. A block that needs the relay wins
// over one that needs only IPv4, as in Lookup.
func (s *Store) LookupProvider(provider string, now time.Time) (Block, bool) {
	if provider == "" {
		return Block{}, false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var found *Block
	for _, b := range s.byProvider[provider] {
		if !b.Active(now) || (found != nil && (!found.IPv6Only() || b.IPv6Only())) {
			continue
		}
		found = b
	}
	if found == nil {
		return Block{}, false
	}
	return *found, true
}

// Add records a block; for a domain already blocked it extends the
// expiry and adds the queue ids. It reports whether the block is new (or
// had expired). A refusal seen before the domain's block was forgotten is
// ignored (an old log line read again).
func (s *Store) Add(b Block) bool {
	_, c := s.learn(b)
	return c == added
}

// change is what adding a block did to the store.
type change int

const (
	unchanged change = iota // ignored, or a known block seen again
	added                   // a new block
	rerouted                // a known IPv4-only block now needs the relay
	extended                // a known block lasts longer, or is now ours too (Host "")
)

// learn is Add that also tells a block that changed route, and returns
// the block as stored.
func (s *Store) learn(b Block) (Block, change) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.addLocked(b)
	if c == unchanged {
		return Block{}, c
	}
	cur := *s.byDomain[b.Domain]
	cur.QueueIDs = slices.Clone(cur.QueueIDs)
	return cur, c
}

// addLocked merges b into memory. A refusal that needs the relay makes a
// known IPv4-only block of the domain a relay block (our IPv4 and IPv6
// addresses are both refused); the other way round it stays relay.
func (s *Store) addLocked(b Block) change {
	if f, ok := s.forgotten[b.Domain]; ok && !b.LastSeen().After(f.At) {
		return unchanged
	}
	b.Route = b.Via() // a block from an old state file needs the relay
	old, ok := s.byDomain[b.Domain]
	if !ok || !b.Learned.Before(old.Expires) {
		if ok {
			s.unindex(old)
		}
		nb := b
		nb.QueueIDs = slices.Clone(b.QueueIDs)
		s.index(&nb)
		return added
	}
	c := unchanged
	if b.Expires.After(old.Expires) {
		old.Expires = b.Expires
		c = extended
	}
	if b.Host == "" && old.Host != "" {
		old.Host = "" // our own log shows it too: ours to share
		c = extended
	}
	if !old.Client.IsValid() {
		old.Client = b.Client
	}
	if old.IPv6Only() && !b.IPv6Only() {
		old.Route, old.Kind, old.Reply = b.Route, b.Kind, b.Reply
		// One block per domain: the route that helps this domain wins,
		// and a provider-wide block of our IPv6 address must not become
		// one that sends the whole provider to the relay.
		s.rescope(old, b)
		c = rerouted
	}
	if b.ProviderWide() && !old.ProviderWide() && b.IPv6Only() == old.IPv6Only() {
		s.rescope(old, b) // the refusal now says it is provider-wide
		if c == unchanged {
			c = extended
		}
	}
	// The latest refusal describes the block, unless it is only of our
	// IPv6 address and the block is of both, or it is of this destination
	// only and the block is provider-wide (the network-wide refusal is
	// what the block stands for while it lasts).
	if seen := b.LastSeen(); seen.After(old.LastSeen()) {
		old.Seen = seen
		if b.IPv6Only() == old.IPv6Only() && (b.ProviderWide() || !old.ProviderWide()) {
			old.Reply, old.Kind = b.Reply, b.Kind
		}
	}
	if b.Learned.Before(old.Learned) {
		old.Learned = b.Learned
	}
	for _, id := range b.QueueIDs {
		if !slices.Contains(old.QueueIDs, id) && len(old.QueueIDs) < maxQueueIDs {
			old.QueueIDs = append(old.QueueIDs, id)
		}
	}
	return c
}

// rescope gives old, an indexed block, the scope and provider of b.
func (s *Store) rescope(old *Block, b Block) {
	s.unindex(old)
	old.Scope, old.Provider = b.Scope, cmp.Or(b.Provider, old.Provider)
	s.index(old)
}

// OnLearn makes fn hear of every block learned, extended or rerouted
// from this host's own delivery log (a fleet shares them), as stored. fn
// is called from the learner, without a lock held: it must not wait.
func (s *Store) OnLearn(fn func(Block)) { s.onLearn.Store(&fn) }

// learned tells the OnLearn hook of b.
func (s *Store) learned(b Block) {
	if fn := s.onLearn.Load(); fn != nil {
		(*fn)(b)
	}
}

// Merge adds a block another host of the fleet learned (b.Host names
// it), like Add but without telling OnLearn; it reports whether memory
// changed. A block the store holds as forgotten since it was last seen
// is ignored. The learner saves the change at its next tick.
func (s *Store) Merge(b Block) bool {
	s.mu.Lock()
	c := s.addLocked(b)
	s.mu.Unlock()
	if c != unchanged {
		s.unsaved.Store(true)
	}
	return c != unchanged
}

// ForgetAt applies a forget made elsewhere (another host's `blocks
// forget`): the block of f.Domain last seen before f.At is dropped, and
// later copies of it are ignored until f.Until, as for Forget. It reports
// whether a block was dropped.
func (s *Store) ForgetAt(f Forgotten) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.forgotten[f.Domain]; ok && !f.At.After(old.At) {
		return false
	}
	if !time.Now().Before(f.Until) {
		return false
	}
	s.forgotten[f.Domain] = f
	s.unsaved.Store(true)
	b, ok := s.byDomain[f.Domain]
	if !ok || b.LastSeen().After(f.At) {
		return false
	}
	s.unindex(b)
	return true
}

// Tombstone returns the record of domain's forget (Forget, ForgetAt),
// while it lasts.
func (s *Store) Tombstone(domain string) (Forgotten, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	f, ok := s.forgotten[domain]
	return f, ok
}

// List returns the blocks not expired at now, by domain.
func (s *Store) List(now time.Time) []Block {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []Block
	for _, b := range s.byDomain {
		if b.Active(now) {
			c := *b
			c.QueueIDs = slices.Clone(b.QueueIDs)
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b Block) int { return strings.Compare(a.Domain, b.Domain) })
	return out
}

// Forget removes the block of domain and remembers that it was forgotten
// (Forgotten), so that a running daemon merging the file drops its copy;
// it reports whether there was a block.
func (s *Store) Forget(domain string) bool {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.byDomain[domain]
	if !ok {
		return false
	}
	s.unindex(b)
	s.forgotten[domain] = Forgotten{Domain: domain, At: now, Until: b.Expires}
	return true
}

// Domains returns the domains whose blocks, not expired at now, were
// learned from destinations of provider (`blocks forget PROVIDER`).
func (s *Store) Domains(provider string, now time.Time) []string {
	var out []string
	for _, b := range s.List(now) {
		if b.Provider == provider {
			out = append(out, b.Domain)
		}
	}
	return out
}

// Offset returns where reading the log stopped.
func (s *Store) Offset() Offset {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.offset
}

// SetOffset records where reading the log stopped.
func (s *Store) SetOffset(o Offset) {
	s.mu.Lock()
	s.offset = o
	s.mu.Unlock()
}

// JournalPos returns where reading the journal stopped.
func (s *Store) JournalPos() JournalPos {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.journal
}

// SetJournalPos records where reading the journal stopped.
func (s *Store) SetJournalPos(p JournalPos) {
	s.mu.Lock()
	s.journal = p
	s.mu.Unlock()
}

// snapshot returns what to save: blocks and tombstones not expired at
// now; it drops the expired ones from memory.
func (s *Store) snapshot(now time.Time) stateFile {
	st := stateFile{Version: stateVersion, Offset: s.Offset(), Blocks: s.List(now)}
	if p := s.JournalPos(); p != (JournalPos{}) {
		st.Journal = &p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.byDomain {
		if !b.Active(now) {
			s.unindex(b)
		}
	}
	for h := range s.byHost {
		s.unindexHost(h, func(b *Block) bool { return !b.Active(now) })
	}
	for p := range s.byProvider {
		s.unindexProvider(p, func(b *Block) bool { return !b.Active(now) })
	}
	for d, f := range s.forgotten {
		if !now.Before(f.Until) {
			delete(s.forgotten, d)
			continue
		}
		st.Forgotten = append(st.Forgotten, f)
	}
	slices.SortFunc(st.Forgotten, func(a, b Forgotten) int { return strings.Compare(a.Domain, b.Domain) })
	return st
}

// Save writes the state file (see statefile.go), after merging what
// another process changed in it since we last read or wrote it. Expired
// blocks are dropped.
func (s *Store) Save() error {
	s.unsaved.Store(false)
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	dir, err := lockDir(filepath.Dir(s.path))
	if err != nil {
		return fmt.Errorf("saving learned blocks: %w", err)
	}
	defer dir.Close()
	cur := statID(s.path)
	if cur != s.seen {
		s.load()
		cur = statID(s.path)
	}
	data, err := json.MarshalIndent(s.snapshot(time.Now()), "", "  ")
	if err != nil {
		return err
	}
	// Only a file we have read fine or written is a good previous copy.
	keep := cur != (fileID{}) && cur == s.seen
	id, prevErr, err := writeState(dir, s.path, append(data, '\n'), keep)
	if prevErr != nil {
		s.log.Warn("no previous copy of the state file kept", zap.Error(prevErr))
	}
	if err != nil {
		return fmt.Errorf("saving learned blocks to %s: %w", s.path, err)
	}
	s.seen = id
	return nil
}
