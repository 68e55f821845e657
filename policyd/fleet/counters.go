package fleet

import (
	"context"
	"errors"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/policyd/limits"
)

// Counters is the outbound limits' store of a fleet (issue #14): every
// host counts into the same Redis keys, so a sender that spreads its mail
// over mx01 and mx02 meets one limit, not two.
//
// Each call is one Lua script, atomic on the server: a sliding window is a
// hash of slot index -> count (the same Slots slots of the same width as
// limits.Memory, so both agree on when a recipient leaves the window), a
// sliding set a sorted set scored by the time a member was last seen, a
// mark a key SET NX PX. Every key carries its limit key in braces, so a
// Cluster keeps each in one slot.
//
// Limits must never stop mail. A Redis call waits at most Timeout; when
// one fails, this host counts alone (in the embedded Memory, which every
// call keeps up to date whether Redis answers or not, and which the state
// file saves) and one call at a time tries Redis again after Retry. The
// switch both ways is logged once. What the host counted alone is written
// to Redis once it answers again, so the other hosts count it too.
//
// A Redis that restarts empty (no persistence) loses every count. Each
// host keeps a mark in Redis (mxdetour:limit:host:NAME) and looks for it
// every Check: when it is gone, the host writes all it counted itself
// (still in its windows) back, and so every host restores its share. The
// recipients counted between the restart and the look count twice, which
// errs on the side of the limit.
type Counters struct {
	*limits.Memory
	c    redis.UniversalClient
	log  *zap.Logger
	now  func() time.Time
	mark string // this host's mark key

	// Timeout bounds each Redis call (default 250 ms); Retry is how long
	// the host counts alone after a failure before asking Redis again
	// (default 1 s); Check is how often it looks for its mark (5 s).
	Timeout, Retry, Check time.Duration

	mu        sync.Mutex
	nextCheck time.Time // when to look for the mark again; zero before the first look
	downUntil time.Time
	down      bool
	probing   bool // a call asks Redis whether it is back
	// owed is what this host counted alone, written to Redis (repay)
	// once it answers again, so that the other hosts count it too.
	owed       *limits.Memory
	owedPruned time.Time
	repaying   bool
	repays     sync.WaitGroup // the repay in flight, for Wait
}

// NewCounters returns the fleet's counters on conn's Redis, with local as
// this host's own counts. Closing conn is the caller's.
func NewCounters(conn *Conn, local *limits.Memory, log *zap.Logger) *Counters {
	quietRedis(log)
	return &Counters{Memory: local, c: conn.client, log: log, now: time.Now, mark: countersPrefix + "host:" + conn.name,
		Timeout: 250 * time.Millisecond, Retry: time.Second, Check: 5 * time.Second, owed: limits.NewMemory()}
}

const countersPrefix = "mxdetour:limit:"

func windowKey(key string) string { return countersPrefix + "w:{" + key + "}" }
func setKey(key string) string    { return countersPrefix + "s:{" + key + "}" }
func markKey(key string) string   { return countersPrefix + "m:{" + key + "}" }

// takeScript: KEYS[1] the window hash; ARGV head slot, n, max, slot width
// (ns, as a string: a window kept under another width starts again), TTL
// (ms). Returns {count with n, 1 if taken}. n = 0 counts only.
var takeScript = redis.NewScript(`
local k = KEYS[1]
local head = tonumber(ARGV[1])
if redis.call('HGET', k, 'w') ~= ARGV[4] then redis.call('DEL', k) end
local vals = redis.call('HGETALL', k)
local sum = 0
for i = 1, #vals, 2 do
  if vals[i] ~= 'w' then
    local idx = tonumber(vals[i])
    if idx < head - ` + strconv.Itoa(limits.Slots) + ` then redis.call('HDEL', k, vals[i])
    elseif idx <= head then sum = sum + tonumber(vals[i+1]) end
  end
end
local n = tonumber(ARGV[2])
local c = sum + n
if c > tonumber(ARGV[3]) then return {c, 0} end
if n > 0 then
  redis.call('HINCRBY', k, ARGV[1], n)
  redis.call('HSET', k, 'w', ARGV[4])
  redis.call('PEXPIRE', k, ARGV[5])
end
return {c, 1}
`)

// giveScript: KEYS[1] the window hash; ARGV slot, n, slot width. A slot
// never goes below zero.
var giveScript = redis.NewScript(`
local k = KEYS[1]
if redis.call('HGET', k, 'w') ~= ARGV[3] then return 0 end
local v = redis.call('HINCRBY', k, ARGV[1], -tonumber(ARGV[2]))
if v <= 0 then redis.call('HDEL', k, ARGV[1]) end
return 0
`)

// seeScript: KEYS[1] the sorted set; ARGV now (ms), member, window (ms),
// most members. Returns {distinct members, 1 if member is new}.
var seeScript = redis.NewScript(`
local k = KEYS[1]
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', k, '-inf', now - tonumber(ARGV[3]))
local added = redis.call('ZADD', k, now, ARGV[2])
local n = redis.call('ZCARD', k)
local most = tonumber(ARGV[4])
if n > most then
  redis.call('ZREMRANGEBYRANK', k, 0, n - most - 1)
  n = most
end
redis.call('PEXPIRE', k, ARGV[3])
return {n, added}
`)

// slotWidth matches limits.Memory's: the window cut in limits.Slots.
func slotWidth(w time.Duration) int64 { return max(1, (int64(w)+limits.Slots-1)/limits.Slots) }

func ttl(w time.Duration) int64 { return max(1, (w+w/limits.Slots).Milliseconds()+1000) }

// call runs f against Redis unless the host is counting alone; false
// means count alone this time. The host's first call looks for its mark
// before it counts anything, so that what it counts then is not written
// back twice.
func (c *Counters) call(f func(ctx context.Context) error) bool {
	now := c.now()
	c.mu.Lock()
	if c.down {
		// While down, one call at a time asks Redis again, once Retry
		// has passed; the others count alone meanwhile, so that a Redis
		// that hangs costs one request Timeout per Retry, not every one.
		if now.Before(c.downUntil) || c.probing {
			c.mu.Unlock()
			return false
		}
		c.probing = true
	}
	first := c.nextCheck.IsZero()
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	var own *limits.Snapshot // all this host counted, when Redis lost it
	var err error
	if first {
		var lost bool
		if lost, err = c.lookForMark(ctx, now); err == nil && lost {
			snap := c.Memory.Snapshot(now)
			own = &snap
		}
	}
	if err == nil {
		err = f(ctx)
	}
	cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.probing = false
	if err != nil && !errors.Is(err, redis.Nil) {
		if !c.down {
			c.log.Error("limits: Redis does not answer; this host counts alone until it does", zap.Error(err))
		}
		c.down, c.downUntil = true, c.now().Add(c.Retry)
		return false
	}
	if first {
		c.nextCheck = now.Add(c.Check)
	}
	back := c.down
	if back {
		c.log.Info("limits: Redis answers again; the fleet counts together")
		c.down = false
	}
	if c.repaying {
		return true
	}
	switch {
	case own != nil:
		c.repaying = true
		c.repays.Go(func() { c.repay(own) })
	case back || !now.Before(c.nextCheck):
		c.nextCheck = now.Add(c.Check)
		c.repaying = true
		c.repays.Go(func() { c.repay(nil) })
	}
	return true
}

// lookForMark sets this host's mark in Redis; lost is true when it was not
// there: Redis has none of what this host counted.
func (c *Counters) lookForMark(ctx context.Context, now time.Time) (lost bool, err error) {
	return c.c.SetNX(ctx, c.mark, now.UTC().Format(time.RFC3339), 0).Result()
}

// addScript: KEYS[1] the window hash; ARGV slot, n, slot width, TTL (ms).
var addScript = redis.NewScript(`
local k = KEYS[1]
if redis.call('HGET', k, 'w') ~= ARGV[3] then redis.call('DEL', k) end
redis.call('HINCRBY', k, ARGV[1], ARGV[2])
redis.call('HSET', k, 'w', ARGV[3])
redis.call('PEXPIRE', k, ARGV[4])
return 0
`)

// repay writes to Redis, off the request path, what this host counted
// alone; or, when its mark is gone (Redis restarted empty), all it counted
// itself. What cannot be written (Redis failed again) is owed still.
// own, when set, is all this host counted, taken when its mark was found
// gone; else repay looks for the mark itself.
func (c *Counters) repay(own *limits.Snapshot) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := c.now()
	lost := own != nil
	if !lost {
		var err error
		if lost, err = c.lookForMark(ctx, now); err != nil {
			c.mu.Lock()
			c.repaying = false
			c.mu.Unlock()
			return // the next call that fails says so
		}
	}
	c.mu.Lock()
	owed := c.owed
	c.owed = limits.NewMemory()
	c.mu.Unlock()
	// When Redis lost the counts, the host's own hold what it owes too.
	what, snap := "all this host counted (Redis had lost it)", limits.Snapshot{}
	switch {
	case own != nil:
		snap = *own
	case lost:
		snap = c.Memory.Snapshot(now)
	default:
		what, snap = "what this host counted alone", owed.Snapshot(now)
	}
	var err error
	slots, members := 0, 0
	for _, sw := range snap.Windows {
		w := time.Duration(sw.Width * limits.Slots)
		for _, sl := range sw.Slots {
			if err == nil {
				err = addScript.Run(ctx, c.c, []string{windowKey(sw.Key)}, sl.Index, sl.Count, strconv.FormatInt(sw.Width, 10), ttl(w)).Err()
				slots++
			}
		}
	}
	for _, ss := range snap.Sets {
		for m, at := range ss.Members {
			if err == nil {
				err = seeScript.Run(ctx, c.c, []string{setKey(ss.Key)}, at.UnixMilli(), m, max(1, ss.Window.Milliseconds()), limits.MaxMembers).Err()
				members++
			}
		}
	}
	c.mu.Lock()
	c.repaying = false
	if err != nil {
		// Owed again, whole: a slot written twice counts a few
		// recipients twice, which errs on the side of the limit.
		c.owed.Restore(snap, now)
		c.mu.Unlock()
		if lost {
			// And the mark goes, so that the next look writes it all.
			dctx, dcancel := context.WithTimeout(context.Background(), c.Timeout)
			_ = c.c.Del(dctx, c.mark).Err()
			dcancel()
		}
		c.log.Warn("limits: writing "+what+" to Redis failed; trying again when it answers", zap.Error(err))
		return
	}
	c.mu.Unlock()
	if slots+members > 0 {
		c.log.Info("limits: wrote "+what+" to Redis", zap.Int("slots", slots), zap.Int("members", members))
	}
}

// Wait waits for a write-back to Redis in flight (repay, at most its 30 s
// timeout) to end: the daemon calls it at stop, once nothing counts any
// more, before the connection it shares is closed.
func (c *Counters) Wait() { c.repays.Wait() }

// Alone reports whether this host is counting without Redis (a gauge).
func (c *Counters) Alone() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.down
}

// Take implements limits.Store.
func (c *Counters) Take(key string, n, most int, w time.Duration, now time.Time) (int, bool) {
	width := slotWidth(w)
	var count int
	var taken bool
	ok := c.call(func(ctx context.Context) error {
		v, err := takeScript.Run(ctx, c.c, []string{windowKey(key)},
			now.UnixNano()/width, n, most, strconv.FormatInt(width, 10), ttl(w)).Int64Slice()
		if err == nil && len(v) == 2 {
			count, taken = int(v[0]), v[1] == 1
		}
		return err
	})
	if !ok {
		count, taken = c.Memory.Take(key, n, most, w, now)
		if taken && n > 0 {
			c.owe().Take(key, n, math.MaxInt, w, now)
		}
		return count, taken
	}
	if taken {
		c.Memory.Take(key, n, math.MaxInt, w, now)
	}
	return count, taken
}

// owe is where counts made alone go. What has left its window by now is
// dropped from it once a minute, so a long outage owes only what still
// counts.
func (c *Counters) owe() *limits.Memory {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); now.Sub(c.owedPruned) > time.Minute {
		c.owedPruned = now
		c.owed.Prune(now)
	}
	return c.owed
}

// Give implements limits.Store.
func (c *Counters) Give(key string, n int, w time.Duration, at time.Time) {
	c.Memory.Give(key, n, w, at)
	width := slotWidth(w)
	if !c.call(func(ctx context.Context) error {
		return giveScript.Run(ctx, c.c, []string{windowKey(key)},
			at.UnixNano()/width, n, strconv.FormatInt(width, 10)).Err()
	}) {
		c.owe().Give(key, n, w, at)
	}
}

// Count implements limits.Store.
func (c *Counters) Count(key string, w time.Duration, now time.Time) int {
	count, _ := c.Take(key, 0, math.MaxInt, w, now)
	return count
}

// See implements limits.Store.
func (c *Counters) See(key, member string, w time.Duration, now time.Time) (int, bool) {
	ln, lnew := c.Memory.See(key, member, w, now)
	var n int
	var isNew bool
	ok := c.call(func(ctx context.Context) error {
		v, err := seeScript.Run(ctx, c.c, []string{setKey(key)},
			now.UnixMilli(), member, max(1, w.Milliseconds()), limits.MaxMembers).Int64Slice()
		if err == nil && len(v) == 2 {
			n, isNew = int(v[0]), v[1] == 1
		}
		return err
	})
	if !ok {
		c.owe().See(key, member, w, now)
		return ln, lnew
	}
	return n, isNew
}

// Once implements limits.Store.
func (c *Counters) Once(key string, w time.Duration, now time.Time) bool {
	local := c.Memory.Once(key, w, now)
	var first bool
	ok := c.call(func(ctx context.Context) error {
		var err error
		first, err = c.c.SetNX(ctx, markKey(key), c.now().UnixMilli(), max(time.Millisecond, w)).Result()
		return err
	})
	if !ok {
		return local
	}
	return first
}

// Reset implements limits.Store: on every host (the keys are shared).
func (c *Counters) Reset(key string) {
	c.Memory.Reset(key)
	c.owe().Reset(key)
	c.call(func(ctx context.Context) error {
		// One DEL per key: in a Cluster the three live in different slots.
		for _, k := range []string{windowKey(key), setKey(key), markKey(key)} {
			if err := c.c.Del(ctx, k).Err(); err != nil {
				return err
			}
		}
		return nil
	})
}
