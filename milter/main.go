// Command mxdetour-milter is the companion milter of mxdetour: it
// DKIM-signs what your users send, refuses recipients in reserved
// domains, and refuses clients from blocked countries.
//
//	mxdetour-milter [-config FILE]              run the milter
//	mxdetour-milter keygen -domain D -selector S [-algorithm rsa|ed25519] [-bits N] [-dir DIR] [-owner USER]
//	mxdetour-milter keygen -next -domain D [-config FILE] [-owner USER]
//	mxdetour-milter keygen -all [-domains FILE] [-dir DIR] [-config FILE]
//	mxdetour-milter doctor [-config FILE] [-json]
//	mxdetour-milter import-opendkim /etc/opendkim.conf
//	mxdetour-milter explain -from ADDR [-auth USER] [-client IP|local] [-to ADDR]
//	mxdetour-milter -check-config [-config FILE] | -version
//
// Under systemd it takes its socket by FileDescriptorName= "milter"
// (contrib/systemd); see internal/daemon.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/d--j/go-milter"
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/internal/geo"
	"github.com/mxdetour/mxdetour/internal/logging"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/setup"
	"github.com/mxdetour/mxdetour/milter/dkim"
	"github.com/mxdetour/mxdetour/milter/filter"
	"github.com/mxdetour/mxdetour/milter/pickup"
)

var version = "dev"

// Exit codes: 78 (EX_CONFIG) means the usage or the configuration is
// wrong, and systemd does not restart (RestartPreventExitStatus=78); 1
// any other failure.
const (
	exitFailure = daemon.ExitFailure
	exitConfig  = daemon.ExitConfig
)

const usage = `usage:
  mxdetour-milter [-config FILE]                  run the milter
  mxdetour-milter -check-config [-config FILE]    validate the configuration, keys and country data, and exit
  mxdetour-milter -version
  mxdetour-milter keygen -domain D -selector S [-algorithm rsa|ed25519] [-bits N] [-dir DIR] [-owner USER]
  mxdetour-milter keygen -next -domain D [-config FILE] [-owner USER]   the next key of a rotation
  mxdetour-milter keygen -all [-domains FILE] [-dir DIR]   keys for every domain of Postfix without one
  mxdetour-milter doctor [-config FILE] [-json]   check DNS: keys, SPF, DMARC, reverse DNS (exit 0/1/2)
  mxdetour-milter import-opendkim FILE            print mxdetour.toml sections for an opendkim.conf
  mxdetour-milter explain -from ADDR [-auth USER] [-client IP|local] [-to ADDR] [-config FILE]
                                                  what the milter would do with such a message, and why
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "keygen":
			return keygen(args[1:], stdout, stderr)
		case "doctor":
			return doctor(args[1:], stdout, stderr)
		case "import-opendkim":
			return importOpenDKIM(args[1:], stdout, stderr)
		case "explain":
			return explain(args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("mxdetour-milter", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage, "\nflags:\n"); fs.PrintDefaults() }
	cfgPath := fs.String("config", "", "configuration file (default "+config.DefaultPath+" if it exists, else built-in defaults)")
	checkOnly := fs.Bool("check-config", false, "validate the configuration, keys and country data, and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitConfig
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mxdetour-milter: unknown argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitConfig
	}
	if *showVersion {
		fmt.Fprintln(stdout, "mxdetour-milter", version)
		return 0
	}
	cfg, used, err := config.LoadDefault(*cfgPath)
	if err != nil { // a broken file (syntax, unknown key, bad value) is the admin's to fix: no start
		fmt.Fprintln(stderr, err)
		if !*checkOnly && daemon.Activated() { // but Postfix must not wait for the fix
			return failOpen(*cfgPath, err, stderr)
		}
		return exitConfig
	}
	log, level, err := logging.New(logging.Options(cfg.Log))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	defer log.Sync() //nolint:errcheck
	if *checkOnly {
		st, err := buildState(cfg, log)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", orEmbedded(used), err)
			return exitConfig
		}
		st.Geo.Close()
		st.Pickup.Close()
		// One line: systemctl reload runs this, and the journal and
		// mail.log take each line for an event of its own.
		rest := ""
		if os.Getenv("MXDETOUR_CHECKED_BY_POLICYD") == "" {
			rest = "; not checked here: learn patterns, state_file and [fleet] (mxdetour-policyd -check-config)"
		}
		fmt.Fprintf(stdout, "%s: OK (%d DKIM keys; checked: every key of the file; each DKIM key file loads as a private key; the country data opens%s)\n",
			orEmbedded(used), st.Keys.Len(), rest)
		return 0
	}
	b := newState(cfg, log, nil)
	m := &milterd{path: *cfgPath, level: level, log: log, filter: filter.New(b.st, log.Named("milter"))}
	m.cur.Store(b)
	m.report(b)
	// Key rotation: a new key signs once its record is published (see
	// README "Rotating keys"); the keys of each reload are followed.
	stopRotation, err := startRotation(m.filter, cfg, func() *dkim.Table { return m.cur.Load().st.Keys }, log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		if daemon.Activated() {
			return failOpen(*cfgPath, err, stderr)
		}
		return exitConfig
	}
	m.stopRotation = stopRotation
	if err := m.serve(); err != nil {
		log.Error("exiting", zap.Error(err))
		return exitFailure
	}
	return 0
}

// buildState is newState held to the standard of -check-config: every
// key that does not load and a country source that does not open are
// errors (78), all named at once. The daemon would start without them
// (degraded, not down); the check is for the admin.
func buildState(cfg *config.Config, log *zap.Logger) (*filter.State, error) {
	b := newState(cfg, log, nil)
	for _, w := range b.warnings {
		log.Warn(w)
	}
	probs := b.problems()
	if len(probs) == 0 {
		return b.st, nil
	}
	b.st.Geo.Close()
	b.st.Pickup.Close()
	errs := make([]error, len(probs))
	for i, p := range probs {
		errs[i] = fmt.Errorf("  %w", p)
	}
	return nil, fmt.Errorf("%d problem(s); the milter would run without what they name:\n%w", len(probs), errors.Join(errs...))
}

// built is a filter state and what it was built without.
type built struct {
	cfg      *config.Config // what st was built from
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
func (b *built) problems() []error {
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

// newState loads keys and country data for cfg. What does not load is
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
func newState(cfg *config.Config, log *zap.Logger, prev *built) *built {
	keys, warnings, kerr := dkim.Load(keyTable(cfg.Milter.DKIM)) // rows and key_dir
	b := &built{cfg: cfg, keyErr: kerr, warnings: warnings, geo: geoNone}
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
	b.st = &filter.State{Opts: filterOptions(cfg), Keys: keys, Sign: signOptions(cfg.Milter.DKIM), Geo: blocker,
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
func (m *milterd) report(b *built) {
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

// milterd is the running milter: the filter and the state it works with.
type milterd struct {
	path   string // the -config flag, read again at reload
	level  zap.AtomicLevel
	log    *zap.Logger
	filter *filter.Filter
	cur    atomic.Pointer[built] // what the filter was last given
	// stopRotation ends the rotation's DNS checks (at SIGTERM).
	stopRotation func()
}

// serve hands the milter to the runner, which serves until SIGTERM and
// reloads on SIGHUP.
func (m *milterd) serve() error {
	b := m.cur.Load()
	cfg := b.cfg
	srv := milter.NewServer(m.filter.ServerOptions()...)
	ms, err := serveMetrics(cfg.Metrics.MilterListen, cfg.Metrics.Pprof, m.filter, srv.MilterCount, m.cur.Load, m.log)
	if err != nil {
		return err
	}
	mode, _ := strconv.ParseUint(cfg.Milter.SocketMode, 8, 32) // validated by config
	m.log.Info("started", zap.String("version", version), zap.Int("dkim_keys", b.st.Keys.Len()),
		zap.Int("problems", len(b.problems())), zap.Bool("country_block", b.st.Geo.Active()),
		zap.Bool("counting_local_mail", b.st.Pickup != nil))
	return daemon.Run(context.Background(), daemon.Options{
		Sockets: []daemon.Socket{{Name: "milter", Addr: cfg.Milter.Listen, Mode: os.FileMode(mode),
			Server: srv}},
		Reload: func(context.Context) error { return m.reload() },
		Health: m.health,
		Stop:   func(context.Context) { ms.Close(); m.stopRotation() },
		Grace:  30 * time.Second,
		Log:    m.log,
	})
}

// reload builds the configuration, keys and country data on the side and
// swaps them in whole (SIGHUP). A file that does not parse leaves
// everything running as it was (the error is returned); bad keys and a
// country source that does not open follow newState's keep-what-works
// policy, and the rest of the new file applies. The country source
// replaced is closed once no lookup uses it.
func (m *milterd) reload() error {
	next, _, err := config.LoadDefault(m.path)
	if err != nil {
		return err
	}
	if err := logging.SetLevel(m.level, next.Log.Level); err != nil {
		return err
	}
	old := m.cur.Load()
	b := newState(next, m.log, old)
	if changed := restartOnly(old.cfg, next); len(changed) > 0 {
		m.log.Warn("these settings change only on restart; still running with the old values", zap.Strings("changed", changed))
	}
	m.filter.Swap(b.st)
	m.cur.Store(b)
	old.st.Geo.Close()
	old.st.Pickup.Close()
	m.report(b)
	m.log.Info("new keys and country data in use", zap.Int("dkim_keys", b.st.Keys.Len()),
		zap.Int("problems", len(b.problems())), zap.Bool("country_block", b.st.Geo.Active()))
	return nil
}

// restartOnly names the settings that differ between a and b and that a
// reload cannot apply: the listeners (possibly passed by systemd) and the
// logger's output format.
func restartOnly(a, b *config.Config) []string {
	return daemon.RestartOnly(
		daemon.Setting{Key: "milter.listen", Was: a.Milter.Listen, Now: b.Milter.Listen},
		daemon.Setting{Key: "milter.socket_mode", Was: a.Milter.SocketMode, Now: b.Milter.SocketMode},
		daemon.Setting{Key: "metrics.milter_listen", Was: a.Metrics.MilterListen, Now: b.Metrics.MilterListen},
		daemon.Setting{Key: "metrics.pprof", Was: fmt.Sprint(a.Metrics.Pprof), Now: fmt.Sprint(b.Metrics.Pprof)},
		daemon.Setting{Key: "log.format", Was: a.Log.Format, Now: b.Log.Format},
	)
}

// health is the watchdog's probe beside the runner's accept-loop check.
// The filter's state is immutable and swapped whole, with no lock to
// deadlock on, so a loaded state is all there is to check here; a milter
// session stuck in go-milter is not seen by it.
func (m *milterd) health(context.Context) error {
	if m.cur.Load() == nil {
		return errors.New("no filter state loaded")
	}
	return nil
}

func orEmbedded(path string) string {
	if path == "" {
		return "embedded defaults"
	}
	return path
}

// failOpen accepts every message untouched on systemd's socket while the
// configuration cannot be used (as Postfix's milter_default_action =
// accept would with the milter away, but without Postfix waiting on a
// socket nobody accepts), and starts again in full service at the first
// reload that finds the file usable (daemon.RunFailOpen). Run by hand, a
// bad file still exits 78.
func failOpen(path string, reason error, stderr io.Writer) int {
	log, _, err := logging.New(logging.Options(config.Default().Log))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	defer log.Sync() //nolint:errcheck
	srv := milter.NewServer(
		milter.WithMilter(func() milter.Milter { return acceptAll{} }),
		milter.WithIdleTimeout(filter.IdleTimeout),
		milter.WithCommandTimeout(filter.CommandTimeout),
		milter.WithMaxConnections(filter.MaxConnections),
	)
	err = daemon.RunFailOpen(context.Background(), daemon.FailOpenOptions{
		Sockets: []daemon.Socket{{Name: "milter", Server: srv}},
		Reason:  reason,
		Usable:  func() error { _, _, err := config.LoadDefault(path); return err },
		Log:     log,
	})
	if err != nil {
		log.Error("exiting", zap.Error(err))
		return exitConfig
	}
	return 0
}

// acceptAll accepts each connection at once: no signature, no refusal.
type acceptAll struct{ milter.NoOpMilter }

func (acceptAll) Connect(string, string, uint16, string, milter.Modifier) (*milter.Response, error) {
	return milter.RespAccept, nil
}
