package limits

import (
	"hash/maphash"
	"sync"
	"time"
)

// Store keeps the counters by key: sliding windows of counts, sliding sets
// of distinct members, and marks that say "done once in this window". The
// Limiter builds its keys ("limit id|subject") and never looks inside the
// store, so a store shared by several hosts (Redis: a sorted set or a hash
// of slots per key, ZADD/ZCARD for members, SET NX PX for marks) can
// stand in for Memory and every host counts together.
type Store interface {
	// Take counts n events for key at now if the window w then holds at
	// most max of them. It returns the count with the n events, whether
	// they were taken or refused.
	Take(key string, n, max int, w time.Duration, now time.Time) (count int, taken bool)
	// Give gives back n events that Take counted at time at.
	Give(key string, n int, w time.Duration, at time.Time)
	// Count is the number of events for key in the window w at now.
	Count(key string, w time.Duration, now time.Time) int
	// See records member under key at now; it returns how many distinct
	// members key has seen in the window w, and whether member is new in it.
	See(key, member string, w time.Duration, now time.Time) (distinct int, isNew bool)
	// Once reports whether key was not marked in the last w, and marks it.
	Once(key string, w time.Duration, now time.Time) bool
	// Reset forgets key's counts, members and mark.
	Reset(key string)
}

// MaxMembers bounds a set: beyond it the member seen longest ago goes.
// The compromise limits are far below it (10 networks, 3 countries).
const MaxMembers = 256

// shards spread the keys over locks: requests of different senders do
// not wait on each other.
const shards = 32

// Memory is the Store of one host: counters in memory, saved to and
// restored from the state file (Snapshot, Restore). Memory per key is
// bounded: a window is Slots+1 counters, a set at most MaxMembers members.
// Keys whose windows are empty go at the next Prune.
type Memory struct {
	seed   maphash.Seed
	shards [shards]memShard
}

type memShard struct {
	mu      sync.Mutex
	windows map[string]*window
	sets    map[string]*set
	marks   map[string]time.Time // key -> until
}

// set is a sliding set: each member with the last time it was seen.
type set struct {
	w       time.Duration
	members map[string]time.Time
}

// NewMemory returns an empty Memory.
func NewMemory() *Memory {
	m := &Memory{seed: maphash.MakeSeed()}
	for i := range m.shards {
		s := &m.shards[i]
		s.windows, s.sets, s.marks = map[string]*window{}, map[string]*set{}, map[string]time.Time{}
	}
	return m
}

func (m *Memory) shard(key string) *memShard {
	return &m.shards[maphash.String(m.seed, key)%shards]
}

// win returns key's window, made when make is true; a window kept under
// another width (the limit's window changed) starts again.
func (s *memShard) win(key string, w time.Duration, now time.Time, make bool) *window {
	win := s.windows[key]
	if win != nil && win.width == slotWidth(w) {
		return win
	}
	if !make {
		return nil
	}
	win = newWindow(w, now)
	s.windows[key] = win
	return win
}

// Take implements Store.
func (m *Memory) Take(key string, n, max int, w time.Duration, now time.Time) (int, bool) {
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	win := s.win(key, w, now, true)
	c := win.count(now) + n
	if c > max {
		return c, false
	}
	win.add(n, now)
	return c, true
}

// Give implements Store.
func (m *Memory) Give(key string, n int, w time.Duration, at time.Time) {
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if win := s.win(key, w, at, false); win != nil {
		win.add(-n, at)
	}
}

// Count implements Store.
func (m *Memory) Count(key string, w time.Duration, now time.Time) int {
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if win := s.win(key, w, now, false); win != nil {
		return win.count(now)
	}
	return 0
}

// See implements Store.
func (m *Memory) See(key, member string, w time.Duration, now time.Time) (int, bool) {
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.sets[key]
	if st == nil {
		st = &set{members: map[string]time.Time{}}
		s.sets[key] = st
	}
	st.w = w
	st.expire(now)
	_, known := st.members[member]
	if !known && len(st.members) >= MaxMembers {
		st.evictOldest()
	}
	st.members[member] = now
	return len(st.members), !known
}

// expire drops the members last seen a window ago or longer.
func (st *set) expire(now time.Time) {
	for k, at := range st.members {
		if now.Sub(at) >= st.w {
			delete(st.members, k)
		}
	}
}

func (st *set) evictOldest() {
	var oldest string
	var at time.Time
	for k, t := range st.members {
		if oldest == "" || t.Before(at) {
			oldest, at = k, t
		}
	}
	delete(st.members, oldest)
}

// Once implements Store.
func (m *Memory) Once(key string, w time.Duration, now time.Time) bool {
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if until, ok := s.marks[key]; ok && now.Before(until) {
		return false
	}
	s.marks[key] = now.Add(w)
	return true
}

// Reset implements Store.
func (m *Memory) Reset(key string) {
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.windows, key)
	delete(s.sets, key)
	delete(s.marks, key)
}

// Prune drops the keys with nothing left in their window at now.
func (m *Memory) Prune(now time.Time) {
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		for k, win := range s.windows {
			if win.count(now) == 0 {
				delete(s.windows, k)
			}
		}
		for k, st := range s.sets {
			if st.expire(now); len(st.members) == 0 {
				delete(s.sets, k)
			}
		}
		for k, until := range s.marks {
			if !now.Before(until) {
				delete(s.marks, k)
			}
		}
		s.mu.Unlock()
	}
}

// Snapshot is what Memory saves in the state file.
type Snapshot struct {
	Windows []SavedWindow `json:"windows,omitempty"`
	Sets    []SavedSet    `json:"sets,omitempty"`
	Marks   []SavedMark   `json:"marks,omitempty"`
}

// SavedWindow is one key's sliding window.
type SavedWindow struct {
	Key   string `json:"key"`
	Width int64  `json:"slot_ns"`
	Slots []slot `json:"slots"`
}

// SavedSet is one key's sliding set.
type SavedSet struct {
	Key     string               `json:"key"`
	Window  time.Duration        `json:"window_ns"`
	Members map[string]time.Time `json:"members"`
}

// SavedMark is one key's "done once until".
type SavedMark struct {
	Key   string    `json:"key"`
	Until time.Time `json:"until"`
}

// Snapshot returns the counters that still count at now.
func (m *Memory) Snapshot(now time.Time) Snapshot {
	m.Prune(now)
	var snap Snapshot
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		for k, win := range s.windows {
			snap.Windows = append(snap.Windows, SavedWindow{Key: k, Width: win.width, Slots: win.slots()})
		}
		for k, st := range s.sets {
			mem := make(map[string]time.Time, len(st.members))
			for name, at := range st.members {
				mem[name] = at
			}
			snap.Sets = append(snap.Sets, SavedSet{Key: k, Window: st.w, Members: mem})
		}
		for k, until := range s.marks {
			snap.Marks = append(snap.Marks, SavedMark{Key: k, Until: until})
		}
		s.mu.Unlock()
	}
	return snap
}

// Restore adds what snap holds at now to m (at start, before serving).
func (m *Memory) Restore(snap Snapshot, now time.Time) {
	for _, sw := range snap.Windows {
		if sw.Width <= 0 {
			continue
		}
		s := m.shard(sw.Key)
		s.mu.Lock()
		if win := restoreWindow(sw.Width, sw.Slots, now); win.total > 0 {
			s.windows[sw.Key] = win
		}
		s.mu.Unlock()
	}
	for _, ss := range snap.Sets {
		if ss.Window <= 0 {
			continue
		}
		st := &set{w: ss.Window, members: map[string]time.Time{}}
		for name, at := range ss.Members {
			if len(st.members) < MaxMembers && !at.After(now) {
				st.members[name] = at
			}
		}
		if st.expire(now); len(st.members) > 0 {
			s := m.shard(ss.Key)
			s.mu.Lock()
			s.sets[ss.Key] = st
			s.mu.Unlock()
		}
	}
	for _, sm := range snap.Marks {
		if now.Before(sm.Until) {
			s := m.shard(sm.Key)
			s.mu.Lock()
			s.marks[sm.Key] = sm.Until
			s.mu.Unlock()
		}
	}
}
