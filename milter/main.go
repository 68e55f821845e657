// Command mxdetour-milter is the companion milter of mxdetour: it
// DKIM-signs what your users send, refuses recipients in reserved
// domains, and refuses clients from blocked countries.
//
//	mxdetour-milter [-config FILE]              run the milter
//	mxdetour-milter keygen -domain D -selector S [-algorithm rsa|ed25519] [-bits N] [-dir DIR] [-owner USER]
//	mxdetour-milter keygen -next -domain D [-config FILE] [-owner USER]
//	mxdetour-milter doctor [-config FILE] [-json]
//	mxdetour-milter import-opendkim /etc/opendkim.conf
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
  mxdetour-milter doctor [-config FILE] [-json]   check DNS: keys, SPF, DMARC, reverse DNS (exit 0/1/2)
  mxdetour-milter import-opendkim FILE            print mxdetour.toml sections for an opendkim.conf
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
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	log, level, err := logging.New(cfg.Log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	defer log.Sync() //nolint:errcheck
	st, err := buildState(cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	if *checkOnly {
		fmt.Fprintf(stdout, "%s: OK (%d DKIM keys)\n", orEmbedded(used), st.Keys.Len())
		return 0
	}
	m := &milterd{path: *cfgPath, level: level, log: log, filter: filter.New(st, log.Named("milter"))}
	m.state.Store(st)
	if err := m.serve(); err != nil {
		log.Error("exiting", zap.Error(err))
		return exitFailure
	}
	return 0
}

// buildState loads keys and country data for cfg; it fails when either is
// unusable, naming the file.
func buildState(cfg *config.Config, log *zap.Logger) (*filter.State, error) {
	keys, warnings, err := dkim.LoadTable(cfg.Milter.DKIM.Keys, cfg.Milter.DKIM.AllowGroupReadable)
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		log.Warn(w)
	}
	var src geo.Source
	if cfg.Milter.Geo.Source != "" {
		var r lookup.Resolver
		if cfg.Milter.Geo.Source == "dns" {
			c, err := lookup.New(setup.Lookup(cfg.DNS), log.Named("lookup"))
			if err != nil {
				return nil, err
			}
			r = c
		}
		if src, err = geo.Open(setup.Geo(cfg.Milter.Geo), r); err != nil {
			return nil, err
		}
	}
	if len(cfg.Milter.Geo.BlockCountries) > 0 && src == nil {
		return nil, errors.New("milter.geo.block_countries is set but no country source is configured")
	}
	return &filter.State{Cfg: cfg, Keys: keys, Opts: dkim.OptionsFrom(cfg.Milter.DKIM), Geo: geo.NewBlocker(src, cfg.Milter.Geo.BlockCountries, cfg.Milter.Geo.Allow)}, nil
}

// milterd is the running milter: the filter and the state it works with.
type milterd struct {
	path   string // the -config flag, read again at reload
	level  zap.AtomicLevel
	log    *zap.Logger
	filter *filter.Filter
	state  atomic.Pointer[filter.State] // what the filter was last given
}

// serve hands the milter to the runner, which serves until SIGTERM and
// reloads on SIGHUP.
func (m *milterd) serve() error {
	st := m.state.Load()
	ms, err := serveMetrics(st.Cfg.Metrics.MilterListen, m.filter, m.log)
	if err != nil {
		return err
	}
	mode, _ := strconv.ParseUint(st.Cfg.Milter.SocketMode, 8, 32) // validated by config
	m.log.Info("started", zap.String("version", version),
		zap.Int("dkim_keys", st.Keys.Len()), zap.Bool("country_block", st.Geo.Active()))
	return daemon.Run(context.Background(), daemon.Options{
		Sockets: []daemon.Socket{{Name: "milter", Addr: st.Cfg.Milter.Listen, Mode: os.FileMode(mode),
			Server: milter.NewServer(m.filter.ServerOptions()...)}},
		Reload: m.reload,
		Health: m.health,
		Stop:   func(context.Context) { ms.Close() },
		Grace:  30 * time.Second,
		Log:    m.log,
	})
}

// reload builds the configuration, keys and country data on the side and
// swaps them in whole (SIGHUP); on an error the running ones stay.
func (m *milterd) reload() error {
	next, _, err := config.LoadDefault(m.path)
	if err != nil {
		return err
	}
	st, err := buildState(next, m.log)
	if err != nil {
		return err
	}
	if err := logging.SetLevel(m.level, next.Log.Level); err != nil {
		return err
	}
	if next.Milter.Listen != m.state.Load().Cfg.Milter.Listen {
		m.log.Warn("milter.listen changes only on restart")
	}
	m.filter.Swap(st)
	m.state.Store(st)
	m.log.Info("new keys and country data in use", zap.Int("dkim_keys", st.Keys.Len()), zap.Bool("country_block", st.Geo.Active()))
	return nil
}

// health is the watchdog's probe beside the runner's accept-loop check.
// The filter's state is immutable and swapped whole, with no lock to
// deadlock on, so a loaded state is all there is to check here; a milter
// session stuck in go-milter is not seen by it.
func (m *milterd) health(context.Context) error {
	if m.state.Load() == nil {
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
