// Command mxdetour-policyd answers Postfix, per recipient, which way to send:
// direct, IPv4 only, or through the relay. It speaks the policy delegation
// protocol (check_policy_service) and the socketmap protocol (transport_maps).
//
//	mxdetour-policyd [-config FILE]                  run the daemon
//	mxdetour-policyd check [-config FILE] [-json] ADDRESS|DOMAIN ...
//	mxdetour-policyd blocks [-config FILE] [forget DOMAIN]
//	mxdetour-policyd holds [-config FILE] [-json] [release KEY | counts KEY]
//	mxdetour-policyd -check-config [-config FILE] | -version
//
// Under systemd it takes its sockets by FileDescriptorName= "policy" and
// "socketmap" (contrib/systemd); see internal/daemon.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/internal/logging"
	"github.com/mxdetour/mxdetour/policyd/policy"
	"github.com/mxdetour/mxdetour/policyd/socketmap"
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
  mxdetour-policyd [-config FILE]                  run the daemon
  mxdetour-policyd -check-config [-config FILE]    validate the configuration and exit
  mxdetour-policyd -version
  mxdetour-policyd check [-config FILE] [-json] ADDRESS|DOMAIN ...
  mxdetour-policyd blocks [-config FILE] [-json] [forget DOMAIN]
  mxdetour-policyd holds [-config FILE] [-json] [release KEY | counts KEY]
  mxdetour-policyd wire [-config FILE] [-postfix-config DIR] [-dry-run]
  mxdetour-policyd unwire [-config FILE] [-postfix-config DIR] [-dry-run]
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "check":
			return checkCommand(args[1:], stdout, stderr)
		case "blocks":
			return blocksCommand(args[1:], stdout, stderr)
		case "holds":
			return holdsCommand(args[1:], stdout, stderr)
		case "wire":
			return wireCommand(args[1:], stdout, stderr)
		case "unwire":
			return unwireCommand(args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("mxdetour-policyd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage, "\nflags:\n"); fs.PrintDefaults() }
	cfgPath := fs.String("config", "", "configuration file (default "+config.DefaultPath+" if it exists, else built-in defaults)")
	checkOnly := fs.Bool("check-config", false, "validate the whole configuration (the [milter] part through mxdetour-milter) and exit")
	selfOnly := fs.Bool("self-only", false, "with -check-config: check only what mxdetour-policyd uses (its unit's reload)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitConfig
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mxdetour-policyd: unknown argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitConfig
	}
	if *showVersion {
		fmt.Fprintln(stdout, "mxdetour-policyd", version)
		return 0
	}
	cfg, used, err := load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		if !*checkOnly && daemon.Activated() {
			return failOpen(*cfgPath, err, stderr)
		}
		return exitConfig
	}
	stateErr := checkStateFile(cfg)
	if *checkOnly {
		rc := 0
		if stateErr != nil {
			fmt.Fprintln(stderr, stateErr)
			rc = exitConfig
		} else {
			// One line: systemctl reload runs this, and the journal and
			// mail.log take each line for an event of its own.
			fmt.Fprintf(stdout, "%s: OK (checked: every key of the file; learn patterns and state_file; [fleet]'s URL and password file; [compromise]'s country data)\n", orEmbedded(used))
		}
		if *selfOnly {
			return rc
		}
		if milterRC := checkMilterPart(*cfgPath, stdout, stderr); rc == 0 {
			rc = milterRC
		}
		return rc
	}
	log, level, err := logging.New(logging.Options(cfg.Log))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	if stateErr != nil {
		log.Error("learned blocks are kept in memory only and lost at exit", zap.Error(stateErr))
	}
	defer log.Sync() //nolint:errcheck // nothing to do about a failed flush at exit
	if err := serve(cfg, used, *cfgPath, level, log); err != nil {
		log.Error("exiting", zap.Error(err))
		var ce configError
		if errors.As(err, &ce) {
			if daemon.Activated() {
				return failOpen(*cfgPath, err, stderr)
			}
			return exitConfig
		}
		return exitFailure
	}
	return 0
}

// load reads the configuration and checks everything a start needs of it
// beyond the file itself (learn patterns, [fleet], the compromise
// signal's country data): -check-config, a start and a reload all call
// it, so that what the check accepts, a start accepts.
func load(path string) (*config.Config, string, error) {
	cfg, used, err := config.LoadDefault(path)
	if err == nil {
		err = checkDeps(cfg)
	}
	return cfg, used, err
}

// failOpen serves Postfix the fail-open answers (socketmap NOTFOUND,
// policy DUNNO) on systemd's sockets while the configuration is unusable,
// and starts again in full service at the first reload that finds it
// usable (daemon.RunFailOpen). Run by hand, a bad file still exits 78.
func failOpen(path string, reason error, stderr io.Writer) int {
	log, _, err := logging.New(logging.Options(config.Default().Log))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	defer log.Sync() //nolint:errcheck
	o := policy.Options{IdleTimeout: 5 * time.Minute, MaxRequestSize: 65536, MaxConnections: 1000}
	err = daemon.RunFailOpen(context.Background(), daemon.FailOpenOptions{
		Sockets: []daemon.Socket{
			{Name: "policy", Server: policy.NewServer(dunno{}, o, log.Named("policy"))},
			{Name: "socketmap", Server: socketmap.NewServer(notFound{}, o, log.Named("socketmap"))},
		},
		Reason: reason,
		Usable: func() error { _, _, err := load(path); return err },
		Log:    log,
	})
	if err != nil {
		log.Error("exiting", zap.Error(err))
		return exitConfig
	}
	return 0
}

// dunno and notFound are the fail-open answers: Postfix goes its default way.
type dunno struct{}

func (dunno) Policy(context.Context, *policy.Request) string { return "DUNNO" }

type notFound struct{}

func (notFound) Lookup(context.Context, string, string) socketmap.Reply { return socketmap.NotFound() }

// serve builds the daemon and hands it to the runner, which serves until
// SIGTERM and reloads on SIGHUP.
func serve(cfg *config.Config, used, flagPath string, level zap.AtomicLevel, log *zap.Logger) error {
	d, err := start(cfg, log)
	if err != nil {
		return err
	}
	log.Info("started", zap.String("version", version), zap.String("config", orEmbedded(used)))
	if d.runtime().engine.DryRun() {
		log.Warn("dry run: no relay transport configured ([transports] relay); decisions are logged and Postfix is always told to go direct")
	}
	return daemon.Run(context.Background(), daemon.Options{
		Sockets: d.sockets(),
		Reload:  func(ctx context.Context) error { return d.reloadFrom(ctx, flagPath, level) },
		Health:  d.health,
		Stop:    d.stop,
		Grace:   10 * time.Second,
		Log:     log,
	})
}

func orEmbedded(path string) string {
	if path == "" {
		return "embedded defaults"
	}
	return path
}

// configError marks errors that mean "fix the configuration", exit 78.
type configError struct{ error }

func (e configError) Unwrap() error { return e.error }

// ctxTimeout is a small helper for commands.
func ctxTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// checkMilterPart has mxdetour-milter check what only it can (the DKIM
// keys and country data of [milter]), so that `mxdetour-policyd
// -check-config` leaves no part of the file unchecked. The milter is
// looked for beside this binary, then in PATH; a host without it is told
// what was not checked.
func checkMilterPart(cfgPath string, stdout, stderr io.Writer) int {
	bin := ""
	if self, err := os.Executable(); err == nil {
		// LookPath of a path checks that file alone: there and executable.
		if p, err := exec.LookPath(filepath.Join(filepath.Dir(self), "mxdetour-milter")); err == nil {
			bin = p
		}
	}
	if bin == "" {
		if p, err := exec.LookPath("mxdetour-milter"); err == nil {
			bin = p
		}
	}
	if bin == "" {
		fmt.Fprintln(stdout, "  not checked: the DKIM keys and country data of [milter] (mxdetour-milter is not installed beside this binary or in PATH)")
		return 0
	}
	args := []string{"-check-config"}
	if cfgPath != "" {
		args = append(args, "-config", cfgPath)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Env = append(os.Environ(), "MXDETOUR_CHECKED_BY_POLICYD=1")
	fmt.Fprintf(stdout, "%s -check-config:\n", bin)
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) && exit.ExitCode() > 0 {
			return exit.ExitCode()
		}
		fmt.Fprintf(stderr, "%s -check-config: %v\n", bin, err)
		return exitFailure
	}
	return 0
}
