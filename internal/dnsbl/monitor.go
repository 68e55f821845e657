package dnsbl

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
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
	// hears of it (internal/alert). A check that learns nothing (Unknown)
	// is no change. It must not block.
	OnChange func(cur Result)
	// OnZoneChange, if set, is called (from the checking goroutine) when a
	// zone starts failing its test points, fails them for another cause,
	// or passes them again; not on every check. It must not block.
	OnZoneChange func(cur ZoneHealth)
}

// Listing is what the decision needs: are we listed on one of some zones?
type Listing struct {
	V4Listed, V6Listed bool
	Hits               []Result // the Listed results among those zones (by Known)
	// Unknown are the results among those zones whose latest check learned
	// nothing: the decision still goes by their Known state, but an
	// explanation must not call them "not listed".
	Unknown []Result
}

// Monitor checks our own sending addresses against blocklists on a timer
// and keeps the latest state for lock-free reading on the hot path.
//
// Each check first asks every zone for its RFC 5782 test points
// (CheckZone). A zone that fails them, answers an error code or does not
// answer leaves our addresses Unknown on it — never clean. Unknown changes
// no route: routing goes by the last state a check learned (Result.Known),
// so an address that was listed stays listed (its destinations keep the
// relay the postmaster set up for it: a broken resolver must not send mail
// back into a block) and one that was clean stays clean. An address never
// learned routes as not listed: mail goes as it would without mxdetour,
// rather than all of it to the relay because a resolver broke. Either way
// the postmaster hears once (OnZoneChange), and the log, metrics and
// `check` say "unknown" with the cause.
type Monitor struct {
	r    lookup.Resolver
	cfg  MonitorConfig
	log  *zap.Logger
	mu   sync.Mutex // serialises checks
	snap atomic.Pointer[snapshot]
}

// snapshot is one check's outcome.
type snapshot struct {
	results map[key]Result
	zones   map[string]ZoneHealth
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
	m.snap.Store(&snapshot{results: map[key]Result{}, zones: map[string]ZoneHealth{}})
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

// CheckNow checks every zone's test points, then every address against
// every zone that passed them, once.
func (m *Monitor) CheckNow(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.snap.Load()
	next := &snapshot{results: make(map[key]Result, len(old.results)), zones: make(map[string]ZoneHealth, len(m.cfg.Zones))}
	for _, zone := range m.cfg.Zones {
		codes := append(slices.Clone(m.cfg.ErrorCodes), m.cfg.ZoneErrorCodes[zone]...)
		health := CheckZone(ctx, m.r, zone, codes)
		prevHealth, seen := old.zones[zone]
		m.reportZone(prevHealth, seen, health)
		next.zones[zone] = health
		for _, ip := range append(slices.Clone(m.cfg.IPv4), m.cfg.IPv6...) {
			k := key{zone, ip}
			var res Result
			if health.OK() {
				res = Query(ctx, m.r, zone, ip, codes)
			} else {
				res = Result{Zone: zone, Addr: ip, Cause: health.Cause, Err: health.Err, Checked: health.Checked}
			}
			prev, seen := old.results[k]
			res.Known = res.State
			if res.State == Unknown && seen {
				// Learned nothing: decide on the last known state, and
				// keep what was known of it.
				res.Known = prev.Known
				if prev.Known == Listed {
					res.Codes, res.Reason = prev.Codes, prev.Reason
				}
			}
			m.report(prev, seen, res, health.OK())
			next.results[k] = res
		}
	}
	m.snap.Store(next)
}

// reportZone logs and reports a change of a zone's test points once, not
// on every check.
func (m *Monitor) reportZone(prev ZoneHealth, seen bool, cur ZoneHealth) {
	if seen && prev.Cause == cur.Cause || !seen && cur.OK() {
		return
	}
	if cur.OK() {
		m.log.Info("blocklist zone passes its test points again: our addresses' state on it is known again", zap.String("zone", cur.Zone))
	} else {
		m.log.Warn("blocklist zone fails its test points: our addresses' state on it is unknown; routes stay as last known",
			zap.String("zone", cur.Zone), zap.String("cause", string(cur.Cause)), zap.Error(cur.Err))
	}
	if m.cfg.OnZoneChange != nil {
		m.cfg.OnZoneChange(cur)
	}
}

// report logs a change of an address's state once, not on every check;
// a zone failing its test points is reported by reportZone alone.
func (m *Monitor) report(prev Result, seen bool, cur Result, zoneOK bool) {
	f := []zap.Field{zap.String("zone", cur.Zone), zap.Stringer("addr", cur.Addr)}
	if cur.State == Unknown {
		if zoneOK && (!seen || prev.State != Unknown || prev.Cause != cur.Cause) {
			m.log.Warn("our address's blocklist state is unknown; its route stays as last known",
				append(f, zap.String("cause", string(cur.Cause)), zap.Stringer("routed_as", cur.Known), zap.Error(cur.Err))...)
		}
		return
	}
	was := Unknown
	if seen {
		was = prev.Known
	}
	switch {
	case cur.State == was:
	case cur.State == Listed:
		m.log.Warn("our address is listed", append(f, zap.String("reason", cur.Reason), zap.Any("codes", cur.Codes))...)
		if m.cfg.OnChange != nil {
			m.cfg.OnChange(cur)
		}
	case was == Listed:
		m.log.Info("our address is no longer listed", f...)
		if m.cfg.OnChange != nil {
			m.cfg.OnChange(cur)
		}
	default:
		m.log.Info("our address is not listed", f...)
	}
}

// Carry takes over what old learned, for the zones and addresses both
// check: a monitor built by a reload routes by the last known states and
// does not report again what old reported.
func (m *Monitor) Carry(old *Monitor) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, next := old.snap.Load(), &snapshot{results: map[key]Result{}, zones: map[string]ZoneHealth{}}
	for _, zone := range m.cfg.Zones {
		if h, ok := o.zones[zone]; ok {
			next.zones[zone] = h
		}
		for _, ip := range append(slices.Clone(m.cfg.IPv4), m.cfg.IPv6...) {
			if r, ok := o.results[key{zone, ip}]; ok {
				next.results[key{zone, ip}] = r
			}
		}
	}
	m.snap.Store(next)
}

// Listing reports whether our IPv4 or IPv6 addresses are listed on any of
// zones: by the latest check that learned something (Result.Known).
func (m *Monitor) Listing(zones []string) Listing {
	var l Listing
	for k, r := range m.snap.Load().results {
		if !slices.Contains(zones, k.zone) {
			continue
		}
		if r.State == Unknown {
			l.Unknown = append(l.Unknown, r)
		}
		if r.Known != Listed {
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
	snap := m.snap.Load().results
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

// Zones returns every zone's latest test point check, sorted by zone.
func (m *Monitor) Zones() []ZoneHealth {
	snap := m.snap.Load().zones
	out := make([]ZoneHealth, 0, len(snap))
	for _, z := range snap {
		out = append(out, z)
	}
	slices.SortFunc(out, func(a, b ZoneHealth) int { return strings.Compare(a.Zone, b.Zone) })
	return out
}
