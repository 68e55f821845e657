// Command mxdetour-milter is the companion milter of mxdetour: it
// DKIM-signs what your users send, refuses recipients in reserved
// domains, and refuses clients from blocked countries.
//
//	mxdetour-milter [-config FILE]              run the milter
//	mxdetour-milter keygen -domain D -selector S [-algorithm rsa|ed25519] [-bits N] [-dir DIR]
//	mxdetour-milter -check-config [-config FILE] | -version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/d--j/go-milter"
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/geo"
	"github.com/mxdetour/mxdetour/internal/listen"
	"github.com/mxdetour/mxdetour/internal/logging"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/setup"
	"github.com/mxdetour/mxdetour/milter/dkim"
	"github.com/mxdetour/mxdetour/milter/filter"
)

var version = "dev"

const (
	exitFailure = 1
	exitConfig  = 2
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "keygen" {
		os.Exit(keygen(os.Args[2:]))
	}
	fs := flag.NewFlagSet("mxdetour-milter", flag.ExitOnError)
	cfgPath := fs.String("config", "", "configuration file (default "+config.DefaultPath+" if it exists, else built-in defaults)")
	checkOnly := fs.Bool("check-config", false, "validate the configuration, keys and country data, and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	_ = fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println("mxdetour-milter", version)
		return
	}
	cfg, used, err := config.LoadDefault(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(exitConfig)
	}
	log, level, err := logging.New(cfg.Log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(exitConfig)
	}
	defer log.Sync() //nolint:errcheck
	st, err := buildState(cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(exitConfig)
	}
	if *checkOnly {
		fmt.Printf("%s: OK (%d DKIM keys)\n", orEmbedded(used), st.Keys.Len())
		return
	}
	if err := run(cfg, st, *cfgPath, level, log); err != nil {
		log.Error("exiting", zap.Error(err))
		os.Exit(exitFailure)
	}
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

func run(cfg *config.Config, st *filter.State, flagPath string, level zap.AtomicLevel, log *zap.Logger) error {
	f := filter.New(st, log.Named("milter"))
	ms, err := serveMetrics(cfg.Metrics.MilterListen, f, log)
	if err != nil {
		return err
	}
	defer ms.Close()
	mode, _ := strconv.ParseUint(cfg.Milter.SocketMode, 8, 32)
	ln, err := listen.Listen(cfg.Milter.Listen, os.FileMode(mode))
	if err != nil {
		return err
	}
	srv := milter.NewServer(f.ServerOptions()...)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("started", zap.String("version", version), zap.String("listen", cfg.Milter.Listen),
		zap.Int("dkim_keys", st.Keys.Len()), zap.Bool("country_block", st.Geo.Active()))

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	for {
		select {
		case err := <-served:
			if errors.Is(err, milter.ErrServerClosed) {
				return nil
			}
			return err
		case s := <-sigs:
			if s != syscall.SIGHUP {
				log.Info("draining and exiting", zap.String("signal", s.String()))
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := srv.Shutdown(ctx)
				cancel()
				if err != nil {
					log.Warn("shutdown", zap.Error(err))
				}
				return nil
			}
			next, _, err := config.LoadDefault(flagPath)
			var nst *filter.State
			if err == nil {
				nst, err = buildState(next, log)
			}
			if err != nil {
				log.Error("reload failed; keeping the running configuration and keys", zap.Error(err))
				continue
			}
			if err := logging.SetLevel(level, next.Log.Level); err != nil {
				log.Error("reload: log level", zap.Error(err))
			}
			if next.Milter.Listen != cfg.Milter.Listen {
				log.Warn("milter.listen changes only on restart")
			}
			f.Swap(nst)
			log.Info("reloaded", zap.Int("dkim_keys", nst.Keys.Len()), zap.Bool("country_block", nst.Geo.Active()))
		}
	}
}

func orEmbedded(path string) string {
	if path == "" {
		return "embedded defaults"
	}
	return path
}
