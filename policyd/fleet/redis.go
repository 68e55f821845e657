package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxdetour/mxdetour/policyd/block"
	"github.com/mxdetour/mxdetour/policyd/learn"
)

// What the fleet keeps in Redis (the prefix is "mxdetour:"):
//
//	mxdetour:block:{DOMAIN}:HOST  a block HOST learned for DOMAIN: JSON of
//	                              block.Block, expiring with the block (PXAT)
//	mxdetour:forgot:{DOMAIN}      a fleet-wide forget: JSON of learn.Forgotten,
//	                              expiring when the forgotten block would have
//	mxdetour:events:DB            the channel: each block written and each
//	                              forget is published there (message)
//
// Each host writes only its own block keys, so no write races another.
// The braces are Cluster hash tags: a domain's keys share one slot.
// Pub/sub channels are not per database, hence the DB in the channel.
const (
	blockPrefix  = "mxdetour:block:"
	forgotPrefix = "mxdetour:forgot:"
)

func blockKey(domain, host string) string { return blockPrefix + "{" + domain + "}:" + host }
func forgotKey(domain string) string      { return forgotPrefix + "{" + domain + "}" }

// message is what the channel carries.
type message struct {
	Op     string           `json:"op"` // "block" or "forget"
	From   string           `json:"from"`
	Block  *block.Block     `json:"block,omitempty"`
	Forget *learn.Forgotten `json:"forget,omitempty"`
}

// Conn is a connection to the fleet's Redis: a single server, Sentinels
// or a Cluster, as the URL says. The daemon's Fleet uses one; commands
// (`blocks`, `blocks forget`) open their own.
type Conn struct {
	client  redis.UniversalClient
	channel string
	name    string
}

// Open connects (lazily: nothing is dialled yet) to the Redis of url.
// password, when set, replaces the URL's (password_file); name is this
// host in shared records. Errors never quote the URL, which may hold a
// password.
func Open(rawURL, password, name string) (*Conn, error) {
	c, db, err := newClient(rawURL, password)
	if err != nil {
		return nil, err
	}
	return &Conn{client: c, channel: fmt.Sprintf("mxdetour:events:%d", db), name: name}, nil
}

// Close closes the connections.
func (c *Conn) Close() error { return c.client.Close() }

// newClient makes the client the URL names: with ?master_name= a
// Sentinel-backed failover client, with ?addr= (more nodes) or
// ?cluster=true a Cluster client, else a single server. All three are a
// redis.UniversalClient.
func newClient(rawURL, password string) (redis.UniversalClient, int, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		return nil, 0, errors.New("redis_url: not a redis:// or rediss:// URL with a host")
	}
	q := u.Query()
	bad := func(err error) error { return fmt.Errorf("redis_url: %w", err) }
	switch {
	case q.Has("master_name"):
		o, err := redis.ParseFailoverURL(rawURL)
		if err != nil {
			return nil, 0, bad(err)
		}
		tune(password, &o.Password, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.ContextTimeoutEnabled)
		return redis.NewFailoverClient(o), o.DB, nil
	case q.Has("addr") || q.Get("cluster") == "true":
		q.Del("cluster")
		u.RawQuery = q.Encode()
		o, err := redis.ParseClusterURL(u.String())
		if err != nil {
			return nil, 0, bad(err)
		}
		tune(password, &o.Password, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.ContextTimeoutEnabled)
		return redis.NewClusterClient(o), 0, nil
	default:
		o, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, 0, bad(err)
		}
		tune(password, &o.Password, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.ContextTimeoutEnabled)
		return redis.NewClient(o), o.DB, nil
	}
}

// tune sets what every client type gets, whatever its URL says: the
// password of password_file, timeouts of 2 s where the URL sets none,
// and a caller's deadline bounding the call (go-redis ignores it
// otherwise; the limits wait 250 ms at most).
func tune(password string, pw *string, dial, read, write *time.Duration, ctxTimeout *bool) {
	if password != "" {
		*pw = password
	}
	*dial, *read, *write = orDefault(*dial), orDefault(*read), orDefault(*write)
	*ctxTimeout = true
}

// orDefault shortens go-redis's 5 s timeouts: an answer slower than 2 s
// is a Redis in trouble, and the fleet then goes on from what it knows.
func orDefault(d time.Duration) time.Duration {
	if d == 0 {
		return 2 * time.Second
	}
	return d
}

// scan returns the values of the keys matching pattern, on every master
// of a Cluster.
func (c *Conn) scan(ctx context.Context, pattern string) (map[string]string, error) {
	var mu sync.Mutex
	out := map[string]string{}
	one := func(ctx context.Context, r redis.UniversalClient) error {
		var keys []string
		it := r.Scan(ctx, 0, pattern, 500).Iterator()
		for it.Next(ctx) {
			keys = append(keys, it.Val())
		}
		if err := it.Err(); err != nil {
			return err
		}
		if len(keys) == 0 {
			return nil
		}
		cmds, err := r.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys {
				p.Get(ctx, k)
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for i, cmd := range cmds {
			if v, err := cmd.(*redis.StringCmd).Result(); err == nil {
				out[keys[i]] = v
			}
		}
		return nil
	}
	if cc, ok := c.client.(*redis.ClusterClient); ok {
		err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return one(ctx, m) })
		return out, err
	}
	return out, one(ctx, c.client)
}

// globEscape quotes the glob characters of SCAN's MATCH.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Blocks returns the fleet's blocks not expired at now, each with the
// host that learned it, by domain then host.
func (c *Conn) Blocks(ctx context.Context, now time.Time) ([]block.Block, error) {
	vals, err := c.scan(ctx, blockPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("reading the fleet's blocks: %w", err)
	}
	var out []block.Block
	for _, v := range vals {
		var b block.Block
		if json.Unmarshal([]byte(v), &b) == nil && b.Active(now) {
			out = append(out, b)
		}
	}
	sortBlocks(out)
	return out, nil
}

// tombstones returns the fleet-wide forgets still in force.
func (c *Conn) tombstones(ctx context.Context) ([]learn.Forgotten, error) {
	vals, err := c.scan(ctx, forgotPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("reading the fleet's forgets: %w", err)
	}
	var out []learn.Forgotten
	for _, v := range vals {
		var f learn.Forgotten
		if json.Unmarshal([]byte(v), &f) == nil && f.Domain != "" {
			out = append(out, f)
		}
	}
	return out, nil
}

// write stores b as learned by c.name and publishes it.
func (c *Conn) write(ctx context.Context, b block.Block) error {
	b.Host, b.QueueIDs = c.name, nil // queue ids mean nothing on another host
	if !b.Active(time.Now()) {
		return nil
	}
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	msg, _ := json.Marshal(message{Op: "block", From: c.name, Block: &b})
	_, err = c.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SetArgs(ctx, blockKey(b.Domain, c.name), data, redis.SetArgs{ExpireAt: b.Expires})
		p.Publish(ctx, c.channel, msg)
		return nil
	})
	return err
}

// Forget forgets domain on every host: it records the forget (until the
// last of its blocks would have expired, at least until), deletes the
// blocks every host wrote, and publishes the forget. It returns the
// number of hosts' blocks deleted.
func (c *Conn) Forget(ctx context.Context, f learn.Forgotten) (int, error) {
	vals, err := c.scan(ctx, blockPrefix+"{"+globEscape(f.Domain)+"}:*")
	if err != nil {
		return 0, fmt.Errorf("forgetting %s in the fleet: %w", f.Domain, err)
	}
	keys := make([]string, 0, len(vals))
	for k, v := range vals {
		keys = append(keys, k)
		var b block.Block
		if json.Unmarshal([]byte(v), &b) == nil && b.Expires.After(f.Until) {
			f.Until = b.Expires
		}
	}
	if !f.Until.After(time.Now()) {
		f.Until = time.Now().Add(time.Hour)
	}
	data, _ := json.Marshal(f)
	msg, _ := json.Marshal(message{Op: "forget", From: c.name, Forget: &f})
	// The forget first: a host writing its copy meanwhile is then told
	// to drop it.
	if err := c.client.SetArgs(ctx, forgotKey(f.Domain), data, redis.SetArgs{ExpireAt: f.Until}).Err(); err != nil {
		return 0, fmt.Errorf("forgetting %s in the fleet: %w", f.Domain, err)
	}
	if len(keys) > 0 {
		if err := c.client.Del(ctx, keys...).Err(); err != nil {
			return 0, fmt.Errorf("forgetting %s in the fleet: %w", f.Domain, err)
		}
	}
	if err := c.client.Publish(ctx, c.channel, msg).Err(); err != nil {
		return 0, fmt.Errorf("telling the fleet %s was forgotten: %w", f.Domain, err)
	}
	return len(keys), nil
}
