// Command mxdetour-policyd answers Postfix, per recipient, which way to send:
// direct, IPv4 only, or through the relay. It speaks the policy delegation
// protocol (check_policy_service) and the socketmap protocol (transport_maps).
//
//	mxdetour-policyd [-config FILE]                  run the daemon
//	mxdetour-policyd check [-config FILE] [-json] ADDRESS|DOMAIN ...
//	mxdetour-policyd blocks [-config FILE] [forget DOMAIN]
//	mxdetour-policyd -check-config [-config FILE] | -version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/logging"
)

var version = "dev"

// Exit codes: 2 means the configuration is wrong (systemd's
// RestartPreventExitStatus), 1 any other failure.
const (
	exitFailure = 1
	exitConfig  = 2
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "check":
			os.Exit(checkCommand(os.Args[2:], os.Stdout, os.Stderr))
		case "blocks":
			os.Exit(blocksCommand(os.Args[2:], os.Stdout, os.Stderr))
		}
	}
	fs := flag.NewFlagSet("mxdetour-policyd", flag.ExitOnError)
	cfgPath := fs.String("config", "", "configuration file (default "+config.DefaultPath+" if it exists, else built-in defaults)")
	checkOnly := fs.Bool("check-config", false, "validate the configuration and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	_ = fs.Parse(os.Args[1:])

	if *showVersion {
		fmt.Println("mxdetour-policyd", version)
		return
	}
	cfg, used, err := config.LoadDefault(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(exitConfig)
	}
	if *checkOnly {
		if err := checkDeps(cfg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(exitConfig)
		}
		fmt.Printf("%s: OK\n", orEmbedded(used))
		return
	}
	log, level, err := logging.New(cfg.Log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(exitConfig)
	}
	defer log.Sync() //nolint:errcheck // nothing to do about a failed flush at exit
	if err := run(cfg, used, *cfgPath, level, log); err != nil {
		log.Error("exiting", zap.Error(err))
		var ce configError
		if errors.As(err, &ce) {
			os.Exit(exitConfig)
		}
		os.Exit(exitFailure)
	}
}

// run starts the daemon and serves until SIGTERM or SIGINT. SIGHUP reloads
// the configuration: the new one is built on the side and swapped in; when
// it is broken the old one stays and the error is logged.
func run(cfg *config.Config, used, flagPath string, level zap.AtomicLevel, log *zap.Logger) error {
	d, err := start(cfg, log)
	if err != nil {
		return err
	}
	log.Info("started", zap.String("version", version), zap.String("config", orEmbedded(used)),
		zap.String("policy", cfg.Policyd.PolicyListen), zap.String("socketmap", cfg.Policyd.SocketmapListen))
	if d.engine.DryRun() {
		log.Warn("dry run: no relay transport configured ([transports] relay); decisions are logged and Postfix is always told to go direct")
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	for {
		select {
		case err := <-d.fatal:
			d.stop(5 * time.Second)
			return err
		case s := <-sigs:
			if s != syscall.SIGHUP {
				log.Info("draining and exiting", zap.String("signal", s.String()))
				d.stop(10 * time.Second)
				return nil
			}
			next, _, err := config.LoadDefault(flagPath)
			if err == nil {
				err = checkDeps(next)
			}
			if err != nil {
				log.Error("reload failed; keeping the running configuration", zap.Error(err))
				continue
			}
			if err := logging.SetLevel(level, next.Log.Level); err != nil {
				log.Error("reload: log level", zap.Error(err))
			}
			d.reload(next)
			log.Info("reloaded", zap.String("config", orEmbedded(used)))
		}
	}
}

func orEmbedded(path string) string {
	if path == "" {
		return "embedded defaults"
	}
	return path
}

// configError marks errors that mean "fix the configuration", exit 2.
type configError struct{ error }

func (e configError) Unwrap() error { return e.error }

// ctxTimeout is a small helper for commands.
func ctxTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
