package server

import (
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/geo"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/setup"
	"github.com/mxdetour/mxdetour/milter/dkim"
	"github.com/mxdetour/mxdetour/milter/filter"
	"github.com/mxdetour/mxdetour/milter/pickup"
)

// Check is Build held to the standard of -check-config: every key that
// does not load and a country source that does not open are errors (the
// caller exits 78), all named at once. The daemon would start without
// them (degraded, not down); the check is for the admin.
func Check(cfg *config.Config, log *zap.Logger) (*filter.State, error) {
	b := Build(cfg, log, nil)
	for _, w := range b.warnings {
		log.Warn(w)
	}
	probs := b.Problems()
	if len(probs) == 0 {
		return b.st, nil
	}
	b.Close()
	errs := make([]error, len(probs))
	for i, p := range probs {
		errs[i] = fmt.Errorf("  %w", p)
	}
	return nil, fmt.Errorf("%d problem(s); the milter would run without what they name:\n%w", len(probs), errors.Join(errs...))
}

// Built is a filter state, the configuration it was built from, and what
// it was built without: what a reload replaces whole.
type Built struct {
	cfg      *config.Config
	st       *filter.State
	geo      geoState
	geoErr   error    // why the country source did not open
	keyErr   error    // one *dkim.KeyError per key file that did not load, joined
	warnings []string // weak RSA keys
}

// geoState says where the country data in use comes from.
type geoState string

const (
	geoNone   geoState = "none"   // no source configured
	geoLoaded geoState = "loaded" // opened from the configuration
	geoKept   geoState = "kept"   // the new source failed at reload; the one in use stays
	geoFailed geoState = "failed" // did not open: no country block
)

// problems lists each bad key and a country source that did not open.
func (b *Built) Problems() []error {
	var out []error
	for _, k := range b.st.Keys.Status() {
		if k.Err != nil {
			out = append(out, k.Err)
		}
	}
	if b.geoErr != nil {
		out = append(out, b.geoErr)
	}
	return out
}

// State is the filter state.
func (b *Built) State() *filter.State { return b.st }

// Close closes the country source and the pickup counter of the state.
func (b *Built) Close() {
	b.st.Geo.Close()
	b.st.Pickup.Close()
}

// Build loads keys and country data for cfg. What does not load is
// left out and recorded, never fatal: a milter with one bad key still
// signs with the others and still applies the reserved-domain and country
// rules, where a milter that is down does none of it (Postfix's
// milter_default_action = accept lets mail through untouched).
//
// At a reload prev is the state in use and the policy is to keep what
// still works: a key whose file now fails keeps signing with the key
// loaded before for the same domain and selector (dkim.Table.KeepFrom;
// that key is still what DNS publishes), and a country source that fails
// to open keeps the one in use (geo.Blocker.Reuse).
func Build(cfg *config.Config, log *zap.Logger, prev *Built) *Built {
	keys, warnings, kerr := dkim.Load(KeyTable(cfg.Milter.DKIM)) // rows and key_dir
	b := &Built{cfg: cfg, keyErr: kerr, warnings: warnings, geo: geoNone}
	if prev != nil {
		keys.KeepFrom(prev.st.Keys)
	}
	r, gerr := geoResolver(cfg, log)
	policy := setup.GeoPolicy(cfg.Milter.Geo, r)
	var blocker *geo.Blocker
	var src geo.Source
	if gerr == nil {
		src, gerr = geo.Open(setup.Geo(cfg.Milter.Geo), r)
	}
	switch {
	case gerr == nil:
		blocker = geo.NewBlocker(src, policy)
		if src != nil {
			b.geo = geoLoaded
		}
	case prev != nil && prev.st.Geo.HasSource():
		blocker, b.geo, b.geoErr = prev.st.Geo.Reuse(policy), geoKept, gerr
	default:
		blocker, b.geo, b.geoErr = geo.NewBlocker(nil, policy), geoFailed, gerr
	}
	b.st = &filter.State{Opts: FilterOptions(cfg), Keys: keys, Sign: SignOptions(cfg.Milter.DKIM), Geo: blocker,
		Pickup: pickupCounter(cfg, log)}
	return b
}

// pickupCounter counts the mail of local accounts (the sendmail command)
// against [[limits]], and names its account for the failure-ratio signal
// ([compromise] failures), by asking policyd on its policy socket
// (milter.policyd_listen, else policyd.policy_listen); nil without either
// or without that socket.
func pickupCounter(cfg *config.Config, log *zap.Logger) *pickup.Counter {
	addr := cfg.MilterPolicyd()
	if (len(cfg.Limits) == 0 && !cfg.Compromise.Failures) || addr == "" {
		return nil
	}
	c, err := pickup.NewCounter(addr, log.Named("pickup"))
	if err != nil { // validated by config: not reached
		log.Error("mail of local accounts is not counted against [[limits]]", zap.Error(err))
		return nil
	}
	return c
}

// geoResolver is the resolver of the country rules: for a "dns" source
// and for rules naming AS numbers; nil when neither needs one.
func geoResolver(cfg *config.Config, log *zap.Logger) (lookup.Resolver, error) {
	if cfg.Milter.Geo.Source != "dns" && !setup.GeoUsesASN(cfg.Milter.Geo) {
		return nil, nil
	}
	c, err := lookup.New(setup.Lookup(cfg.DNS), log.Named("lookup"))
	if err != nil {
		return nil, fmt.Errorf("country rules: resolver: %w", err)
	}
	return c, nil
}

// report logs what b was built without, loudly: each key that does not
// sign (or signs from memory only), and the country source.
func (m *Daemon) report(b *Built) {
	for _, w := range b.warnings {
		m.log.Warn(w)
	}
	for _, k := range b.st.Keys.Status() {
		f := []zap.Field{zap.String("domain", k.Domain), zap.String("selector", k.Selector), zap.String("file", k.File), zap.Error(k.Err)}
		switch k.State {
		case dkim.Failed:
			m.log.Error("dkim key not loaded: mail from its domain leaves without this signature; the other keys sign", f...)
		case dkim.Kept:
			m.log.Error("dkim key file does not load: still signing with the key loaded before it broke; fix the file before the next restart", f...)
		}
	}
	switch b.geo {
	case geoFailed:
		m.log.Error("country source not opened: no country block until it opens (reload)", zap.Error(b.geoErr))
	case geoKept:
		m.log.Error("country source not opened: still using the one loaded before", zap.Error(b.geoErr))
	}
	if age, stale := b.st.Geo.Stale(b.cfg.Milter.Geo.MaxAge.Duration, time.Now()); stale {
		m.log.Warn("country data older than milter.geo.max_age: update it (geoipupdate, the RIR files) and reload",
			zap.Duration("age", age.Round(time.Hour)), zap.Time("built", b.st.Geo.Built()),
			zap.Duration("max_age", b.cfg.Milter.Geo.MaxAge.Duration))
	}
}
