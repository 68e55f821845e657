package dnsbl

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/lookup"
)

// MonitorConfig says what to check and how often.
type MonitorConfig struct {
	IPv4, IPv6     []netip.Addr // empty: the host's own global addresses
	Zones          []string
	ErrorCodes     []netip.Prefix
	ZoneErrorCodes map[string][]netip.Prefix
	Interval       time.Duration
	// OnChange, if set, is called (from the checking goroutine) when an
	// address becomes listed, or clean after being listed: the postmaster
	// hears of it (internal/alert). It must not block.
	OnChange func(cur Result)
}

// Listing is what the decision needs: are we listed on one of some zones?
type Listing struct {
	V4Listed, V6Listed bool
	Hits               []Result // the Listed results among those zones
}

// Monitor checks our own sending addresses against blocklists on a timer
// and keeps the latest state for lock-free reading on the hot path.
type Monitor struct {
	r    lookup.Resolver
	cfg  MonitorConfig
	log  *zap.Logger
	mu   sync.Mutex // serialises checks
	snap atomic.Pointer[map[key]Result]
}

type key struct {
	zone string
	addr netip.Addr
}

// NewMonitor returns a monitor; Run or CheckNow fills it.
func NewMonitor(r lookup.Resolver, c MonitorConfig, log *zap.Logger) *Monitor {
	if len(c.IPv4) == 0 && len(c.IPv6) == 0 {
		v4, v6, err := SelfAddresses()
		if err != nil {
			log.Warn("cannot read this host's addresses; set [self] ipv4/ipv6", zap.Error(err))
		}
		c.IPv4, c.IPv6 = v4, v6
		log.Info("checking this host's own addresses against blocklists", zap.Any("ipv4", v4), zap.Any("ipv6", v6))
	}
	m := &Monitor{r: r, cfg: c, log: log}
	empty := map[key]Result{}
	m.snap.Store(&empty)
	return m
}

// SelfAddresses returns the host's global unicast addresses (not loopback,
// link-local or private).
func SelfAddresses() (v4, v6 []netip.Addr, err error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, nil, err
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if !ip.IsGlobalUnicast() || ip.IsPrivate() {
			continue
		}
		if ip.Is4() {
			v4 = append(v4, ip)
		} else {
			v6 = append(v6, ip)
		}
	}
	return v4, v6, nil
}

// Run checks at once and then every Interval until ctx ends.
func (m *Monitor) Run(ctx context.Context) {
	m.CheckNow(ctx)
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.CheckNow(ctx)
		}
	}
}

// CheckNow checks every address against every zone once.
func (m *Monitor) CheckNow(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.snap.Load()
	next := make(map[key]Result, len(old))
	for _, zone := range m.cfg.Zones {
		codes := append(slices.Clone(m.cfg.ErrorCodes), m.cfg.ZoneErrorCodes[zone]...)
		healthy, herr := ZoneHealthy(ctx, m.r, zone, codes)
		for _, ip := range append(slices.Clone(m.cfg.IPv4), m.cfg.IPv6...) {
			k := key{zone, ip}
			var res Result
			if healthy {
				res = Query(ctx, m.r, zone, ip, codes)
			} else {
				res = Result{Zone: zone, Addr: ip, Err: herr, Checked: time.Now()}
			}
			prev, seen := old[k]
			m.report(prev, seen, res)
			if res.State == Unknown && seen && prev.State != Unknown {
				// Don't flap to clean (or listed) because one check failed:
				// decide on the last known state, but remember the error.
				kept := prev
				kept.Err = res.Err
				res = kept
			}
			next[k] = res
		}
	}
	m.snap.Store(&next)
}

// report logs a change of state once, not on every check.
func (m *Monitor) report(prev Result, seen bool, cur Result) {
	if seen && prev.State == cur.State {
		return
	}
	f := []zap.Field{zap.String("zone", cur.Zone), zap.Stringer("addr", cur.Addr)}
	switch cur.State {
	case Listed:
		m.log.Warn("our address is listed", append(f, zap.String("reason", cur.Reason), zap.Any("codes", cur.Codes))...)
		if m.cfg.OnChange != nil {
			m.cfg.OnChange(cur)
		}
	case Clean:
		if seen && prev.State == Listed {
			m.log.Info("our address is no longer listed", f...)
			if m.cfg.OnChange != nil {
				m.cfg.OnChange(cur)
			}
		} else if !seen {
			m.log.Info("our address is not listed", f...)
		}
	default:
		m.log.Warn("blocklist state unknown", append(f, zap.Error(cur.Err))...)
	}
}

// Listing reports whether our IPv4 or IPv6 addresses are listed on any of
// zones, from the latest check.
func (m *Monitor) Listing(zones []string) Listing {
	var l Listing
	for k, r := range *m.snap.Load() {
		if r.State != Listed || !slices.Contains(zones, k.zone) {
			continue
		}
		if k.addr.Is4() {
			l.V4Listed = true
		} else {
			l.V6Listed = true
		}
		l.Hits = append(l.Hits, r)
	}
	return l
}

// Results returns every latest result, for `check` and metrics.
func (m *Monitor) Results() []Result {
	snap := *m.snap.Load()
	out := make([]Result, 0, len(snap))
	for _, r := range snap {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Result) int {
		if a.Zone != b.Zone {
			if a.Zone < b.Zone {
				return -1
			}
			return 1
		}
		return a.Addr.Compare(b.Addr)
	})
	return out
}
