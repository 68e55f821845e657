// Package fleet shares the blocks each MX host's policyd learns with the
// other hosts of a site, through Redis (or Valkey, Sentinel, Cluster) and
// github.com/redis/go-redis/v9: a block one host learns from its delivery
// log routes the others' mail within a second, and `blocks forget`
// forgets on every host.
//
// Decisions never wait on Redis: they read the local learn.Store, which
// the fleet feeds in the background. Each block this host learns is
// written to Redis with its expiry as the key's TTL (SET PXAT) and
// published (PUBLISH); every host subscribes (SUBSCRIBE) and merges what
// others learned into its store. While Redis is down or unreachable every
// host routes from what it knows; the fleet logs that once, reconnects
// with backoff, and on reconnecting subscribes first, then reads what it
// missed (SCAN of the block and forget keys) and writes every block this
// host learned that still lasts: nothing learned is lost on either side,
// even when Redis came back empty.
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/policyd/block"
	"github.com/mxdetour/mxdetour/policyd/learn"
)

// Options configure a Fleet.
type Options struct {
	URL      string // redis://, rediss://; see Open
	Password string // replaces the URL's password when set (password_file)
	Name     string // this host in shared records, unique in the fleet; "" = the host name
	// OwnOnly applies another host's block only when the refusal quoted
	// one of Own, our sending addresses (share = "own").
	OwnOnly bool
	Own     []netip.Addr

	// MinBackoff and MaxBackoff bound the wait between reconnection
	// attempts (defaults 100 ms and 2 s); Ping is how often a quiet
	// subscription is checked (default 1 s).
	MinBackoff, MaxBackoff, Ping time.Duration
}

// Fleet keeps one host's store in step with the others'.
type Fleet struct {
	*Conn
	o     Options
	store *learn.Store
	log   *zap.Logger

	mu      sync.Mutex
	pending map[string]pendingBlock // our blocks not yet written to Redis, by domain
	kick    chan struct{}

	up         atomic.Bool
	received   atomic.Uint64
	pubFailed  atomic.Uint64
	downLogged bool // under mu
	downSince  time.Time
}

// pendingBlock is one of our blocks waiting to be written.
type pendingBlock struct {
	b       block.Block
	counted bool // already counted as a publish failure
}

// New connects s to the fleet: from now on every block s learns from this
// host's log is shared. Nothing is dialled before Run.
func New(o Options, s *learn.Store, log *zap.Logger) (*Fleet, error) {
	if o.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, err
		}
		o.Name = h
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(2*time.Second, o.MinBackoff)
	}
	if o.Ping <= 0 {
		o.Ping = time.Second
	}
	c, err := Open(o.URL, o.Password, o.Name)
	if err != nil {
		return nil, err
	}
	quietRedis(log)
	f := &Fleet{Conn: c, o: o, store: s, log: log, pending: map[string]pendingBlock{}, kick: make(chan struct{}, 1)}
	s.OnLearn(f.learned)
	return f, nil
}

// Connected reports whether the fleet is connected and in step (a gauge).
func (f *Fleet) Connected() bool { return f.up.Load() }

// Received counts the blocks learned by other hosts that changed this
// host's store (a counter).
func (f *Fleet) Received() uint64 { return f.received.Load() }

// PublishFailures counts the blocks this host learned that could not be
// shared at once, Redis being down or failing; each is shared when Redis
// answers again (a counter).
func (f *Fleet) PublishFailures() uint64 { return f.pubFailed.Load() }

// learned is the store's OnLearn hook: it queues b and never waits.
func (f *Fleet) learned(b block.Block) {
	f.mu.Lock()
	f.pending[b.Domain] = pendingBlock{b: b}
	f.mu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// Run keeps the fleet connected until ctx ends, then closes the
// connections.
func (f *Fleet) Run(ctx context.Context) {
	defer f.client.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); f.publish(ctx) }()
	defer wg.Wait()
	backoff := f.o.MinBackoff
	for {
		wasUp, err := f.session(ctx)
		f.up.Store(false)
		if ctx.Err() != nil {
			return
		}
		f.down(err)
		if wasUp {
			backoff = f.o.MinBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1) // jitter: hosts do not reconnect in step
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, f.o.MaxBackoff)
	}
}

// session subscribes, catches up and then applies what the channel
// brings, until the connection fails; wasUp says it got that far.
func (f *Fleet) session(ctx context.Context) (wasUp bool, err error) {
	ps := f.client.Subscribe(ctx, f.channel)
	defer ps.Close()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = ps.Receive(sctx) // the subscription's confirmation
	cancel()
	if err != nil {
		return false, err
	}
	read, wrote, err := f.resync(ctx)
	if err != nil {
		return false, err
	}
	f.connected(read, wrote)
	for {
		msg, err := ps.ReceiveTimeout(ctx, f.o.Ping)
		if ctx.Err() != nil {
			return true, nil
		}
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return true, err
			}
			if err := ps.Ping(ctx); err != nil {
				return true, err
			}
			continue
		}
		if m, ok := msg.(*redis.Message); ok {
			f.handle(m.Payload)
		}
	}
}

// resync reads the forgets and blocks the fleet holds, then writes every
// block of ours that lasts (Redis may have come back empty). It returns
// how many blocks of others changed our store and how many we wrote.
func (f *Fleet) resync(ctx context.Context) (read, wrote int, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	forgets, err := f.tombstones(ctx)
	if err != nil {
		return 0, 0, err
	}
	for _, t := range forgets {
		if f.store.ForgetAt(t) {
			f.log.Info("learned block forgotten in the fleet", zap.String("domain", t.Domain), zap.Time("at", t.At))
		}
	}
	now := time.Now()
	blocks, err := f.Blocks(ctx, now)
	if err != nil {
		return 0, 0, err
	}
	for _, b := range blocks {
		if f.apply(b, false) {
			read++
		}
	}
	for _, b := range f.store.List(now) {
		if b.Host != "" {
			continue // another host's: it writes its own
		}
		if err := f.write(ctx, b); err != nil {
			return read, wrote, err
		}
		wrote++
	}
	return read, wrote, nil
}

// handle applies one message of the channel.
func (f *Fleet) handle(payload string) {
	var m message
	if err := json.Unmarshal([]byte(payload), &m); err != nil {
		f.log.Debug("not a fleet message", zap.Error(err))
		return
	}
	switch {
	case m.Op == "block" && m.Block != nil && m.From != f.o.Name:
		f.apply(*m.Block, true)
	case m.Op == "forget" && m.Forget != nil:
		if f.store.ForgetAt(*m.Forget) {
			f.log.Info("learned block forgotten in the fleet (blocks forget)", zap.String("domain", m.Forget.Domain),
				zap.String("by", m.From), zap.Time("at", m.Forget.At))
		}
	}
}

// apply merges a block from the fleet into the store; it reports whether
// the store changed. A block of ours that our store lost (a state file
// deleted) comes back as ours.
func (f *Fleet) apply(b block.Block, live bool) bool {
	if b.Host == f.o.Name {
		b.Host = ""
	} else if b.Host == "" || (f.o.OwnOnly && !slices.Contains(f.o.Own, b.Client.Unmap())) {
		return false
	}
	b.QueueIDs = nil
	if !f.store.Merge(b) {
		return false
	}
	if b.Host != "" {
		f.received.Add(1)
	}
	if live {
		f.log.Info("block learned by another host: "+learn.Summary(b, true), zap.String("host", b.Host),
			zap.String("domain", b.Domain), zap.String("route", b.Via()), zap.Time("until", b.Expires))
	}
	return true
}

// publish writes our queued blocks while connected; a block that cannot
// be written waits (and is written again at the next resync anyway).
func (f *Fleet) publish(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.kick:
		case <-tick.C:
		}
		f.mu.Lock()
		todo := make([]pendingBlock, 0, len(f.pending))
		for _, p := range f.pending {
			todo = append(todo, p)
		}
		f.mu.Unlock()
		for _, p := range todo {
			var err error
			if f.up.Load() {
				wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				err = f.write(wctx, p.b)
				cancel()
			} else {
				err = errors.New("not connected")
			}
			f.mu.Lock()
			cur, ok := f.pending[p.b.Domain]
			same := ok && cur.b.Expires.Equal(p.b.Expires) && cur.b.Route == p.b.Route
			switch {
			case err == nil && same:
				delete(f.pending, p.b.Domain)
			case err != nil && same && !cur.counted:
				cur.counted = true
				f.pending[p.b.Domain] = cur
				f.pubFailed.Add(1)
				f.log.Debug("block not shared yet", zap.String("domain", p.b.Domain), zap.Error(err))
			}
			f.mu.Unlock()
		}
	}
}

// connected marks the fleet up, logging the end of an outage.
func (f *Fleet) connected(read, wrote int) {
	f.mu.Lock()
	wasDown, since := f.downLogged, f.downSince
	f.downLogged = false
	f.mu.Unlock()
	f.up.Store(true)
	select { // what waited is written now
	case f.kick <- struct{}{}:
	default:
	}
	if wasDown {
		f.log.Info("fleet: Redis answers again; in step with the other hosts", zap.String("host", f.o.Name),
			zap.Duration("was_down", time.Since(since).Round(time.Second)),
			zap.Int("blocks_read", read), zap.Int("blocks_shared", wrote))
		return
	}
	f.log.Info("fleet: connected", zap.String("host", f.o.Name), zap.Int("blocks_read", read), zap.Int("blocks_shared", wrote))
}

// down logs the first failure of an outage, once.
func (f *Fleet) down(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.downLogged {
		f.log.Debug("fleet: Redis still unreachable", zap.Error(err))
		return
	}
	f.downLogged, f.downSince = true, time.Now()
	f.log.Warn("fleet: Redis unreachable; routing from what this host knows, sharing again when it answers",
		zap.String("host", f.o.Name), zap.Error(err))
}

// sortBlocks orders blocks by domain, then host.
func sortBlocks(bs []block.Block) {
	slices.SortFunc(bs, func(a, b block.Block) int {
		if c := strings.Compare(a.Domain, b.Domain); c != 0 {
			return c
		}
		return strings.Compare(a.Host, b.Host)
	})
}

var quietOnce sync.Once

// quietRedis sends go-redis's own log lines (one per failed dial, while
// Redis is down) to log at debug level: the fleet says once what matters.
func quietRedis(log *zap.Logger) {
	quietOnce.Do(func() { redis.SetLogger(redisLog{log.Named("redis").Sugar()}) })
}

type redisLog struct{ s *zap.SugaredLogger }

func (l redisLog) Printf(_ context.Context, format string, v ...any) { l.s.Debugf(format, v...) }
