package learn

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
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

type stateFile struct {
	Version int     `json:"version"`
	Offset  Offset  `json:"offset"`
	Blocks  []Block `json:"blocks"`
}

const maxQueueIDs = 50

// Store holds learned blocks in memory and in a state file that survives
// restarts. It is safe for concurrent use; Lookup is the hot path.
type Store struct {
	path string
	log  *zap.Logger

	mu       sync.RWMutex
	byDomain map[string]*Block
	byHost   map[string]*Block
	offset   Offset
	written  time.Time // mtime of the state file as we last read or wrote it
}

// OpenStore reads the state file at path. A missing file is an empty
// store; a corrupt one is set aside (renamed PATH.corrupt-TIME), logged,
// and replaced by an empty store: losing learned blocks must never stop
// the daemon.
func OpenStore(path string, log *zap.Logger) (*Store, error) {
	s := &Store{path: path, log: log, byDomain: map[string]*Block{}, byHost: map[string]*Block{}}
	return s, s.Reload()
}

// Reload re-reads the state file (SIGHUP, after `blocks forget`).
func (s *Store) Reload() error {
	data, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state file %s: %w", s.path, err)
	}
	var st stateFile
	if err := json.Unmarshal(data, &st); err != nil || st.Version != 1 {
		aside := s.path + ".corrupt-" + time.Now().UTC().Format("20060102T150405")
		rerr := os.Rename(s.path, aside)
		s.log.Error("state file is corrupt; set aside, starting with no learned blocks",
			zap.String("file", s.path), zap.String("moved_to", aside), zap.Error(err), zap.NamedError("rename", rerr))
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byDomain, s.byHost = map[string]*Block{}, map[string]*Block{}
	for i := range st.Blocks {
		s.index(&st.Blocks[i])
	}
	s.offset = st.Offset
	if fi, err := os.Stat(s.path); err == nil {
		s.written = fi.ModTime()
	}
	return nil
}

// mergeExternal applies an edit of the state file made by another process
// (`blocks forget`) before we overwrite it: blocks the file no longer has,
// learned before it was written, were forgotten.
func (s *Store) mergeExternal() {
	fi, err := os.Stat(s.path)
	if err != nil || fi.ModTime().Equal(s.written) {
		return
	}
	data, err := os.ReadFile(s.path)
	var st stateFile
	if err != nil || json.Unmarshal(data, &st) != nil {
		return
	}
	inFile := map[string]bool{}
	for _, b := range st.Blocks {
		inFile[b.Domain] = true
	}
	s.mu.RLock()
	var gone []string
	for d, b := range s.byDomain {
		if !inFile[d] && b.Learned.Before(fi.ModTime()) {
			gone = append(gone, d)
		}
	}
	s.mu.RUnlock()
	for _, d := range gone {
		s.Forget(d)
		s.log.Info("learned block forgotten by an edit of the state file", zap.String("domain", d))
	}
}

func (s *Store) index(b *Block) {
	s.byDomain[b.Domain] = b
	if b.MXHost != "" && b.MXHost != "none" {
		s.byHost[b.MXHost] = b
	}
}

// Lookup returns a block, not expired at now, for domain or for one of its
// MX hosts (learned from any domain that uses that host).
func (s *Store) Lookup(domain string, mxHosts []string, now time.Time) (Block, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if b, ok := s.byDomain[domain]; ok && now.Before(b.Expires) {
		return *b, true
	}
	for _, h := range mxHosts {
		if b, ok := s.byHost[h]; ok && now.Before(b.Expires) {
			return *b, true
		}
	}
	return Block{}, false
}

// Add records a block; for a domain already blocked it extends the
// expiry and adds the queue ids. It reports whether the block is new (or
// had expired).
func (s *Store) Add(b Block) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.byDomain[b.Domain]
	isNew := !ok || !b.Learned.Before(old.Expires)
	if ok && !isNew {
		if b.Expires.After(old.Expires) {
			old.Expires = b.Expires
		}
		for _, id := range b.QueueIDs {
			if !slices.Contains(old.QueueIDs, id) && len(old.QueueIDs) < maxQueueIDs {
				old.QueueIDs = append(old.QueueIDs, id)
			}
		}
		old.Reply, old.Kind = b.Reply, b.Kind
		return false
	}
	nb := b
	nb.QueueIDs = slices.Clone(b.QueueIDs)
	s.index(&nb)
	return true
}

// List returns the blocks not expired at now, by domain.
func (s *Store) List(now time.Time) []Block {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []Block
	for _, b := range s.byDomain {
		if now.Before(b.Expires) {
			out = append(out, *b)
		}
	}
	slices.SortFunc(out, func(a, b Block) int {
		if a.Domain < b.Domain {
			return -1
		}
		if a.Domain > b.Domain {
			return 1
		}
		return 0
	})
	return out
}

// Forget removes the block of domain; it reports whether there was one.
func (s *Store) Forget(domain string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.byDomain[domain]
	if !ok {
		return false
	}
	delete(s.byDomain, domain)
	if s.byHost[b.MXHost] == b {
		delete(s.byHost, b.MXHost)
	}
	return true
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

// Save writes the state file atomically: a temporary file in the same
// directory, synced, then renamed over the old one. Expired blocks are
// dropped.
func (s *Store) Save() error {
	s.mergeExternal()
	now := time.Now()
	st := stateFile{Version: 1, Offset: s.Offset(), Blocks: s.List(now)}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(s.path)
	f, err := os.CreateTemp(dir, ".state-*.tmp")
	if err != nil {
		return fmt.Errorf("saving learned blocks: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err = f.Write(append(data, '\n')); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o640)
	}
	if err == nil {
		err = os.Rename(f.Name(), s.path)
	}
	if err != nil {
		return fmt.Errorf("saving learned blocks to %s: %w", s.path, err)
	}
	if fi, err := os.Stat(s.path); err == nil {
		s.mu.Lock()
		s.written = fi.ModTime()
		s.mu.Unlock()
	}
	return nil
}
