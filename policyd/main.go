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
	"github.com/mxdetour/mxdetour/policyd/admin"
	"github.com/mxdetour/mxdetour/policyd/server"
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
			return admin.Check(args[1:], stdout, stderr)
		case "blocks":
			return admin.Blocks(args[1:], stdout, stderr)
		case "holds":
			return admin.Holds(args[1:], stdout, stderr)
		case "wire":
			return admin.Wire(args[1:], stdout, stderr)
		case "unwire":
			return admin.Unwire(args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("mxdetour-policyd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage, "\nflags:\n"); fs.PrintDefaults() }
	cfgPath := fs.String("config", "", "configuration file (default "+config.DefaultPath+" if it exists, else built-in defaults)")
	checkOnly := fs.Bool("check-config", false, "validate the whole configuration (the [milter] part through mxdetour-milter) and exit")
	selfOnly := fs.Bool("self-only", false, "with -check-config: check only what mxdetour-policyd uses (its unit's reload)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if code, ok := daemon.ParseFlags(fs, args); !ok {
		return code
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
	cfg, used, err := server.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		if !*checkOnly && daemon.Activated() {
			return failOpen(*cfgPath, err, stderr)
		}
		return exitConfig
	}
	stateErr := server.CheckStateFile(cfg)
	if *checkOnly {
		rc := 0
		if stateErr != nil {
			fmt.Fprintln(stderr, stateErr)
			rc = exitConfig
		} else {
			// One line: systemctl reload runs this, and the journal and
			// mail.log take each line for an event of its own.
			fmt.Fprintf(stdout, "%s: OK (checked: every key of the file; learn patterns and state_file; [fleet]'s URL and password file; [compromise]'s country data)\n", config.Source(used))
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
		var ce server.ConfigError
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

// serve starts the daemon and hands it to the runner, which serves until
// SIGTERM and reloads on SIGHUP.
func serve(cfg *config.Config, used, flagPath string, level zap.AtomicLevel, log *zap.Logger) error {
	s, err := server.Start(cfg, server.Options{Log: log, Version: version})
	if err != nil {
		return err
	}
	log.Info("started", zap.String("version", version), zap.String("config", config.Source(used)))
	if s.DryRun() {
		log.Warn("dry run: no relay transport configured ([transports] relay); decisions are logged and Postfix is always told to go direct")
	}
	return daemon.Run(context.Background(), daemon.Options{
		Sockets: s.Sockets(),
		Reload:  func(ctx context.Context) error { return s.ReloadFrom(ctx, flagPath, level) },
		Health:  s.Health,
		Stop:    s.Stop,
		Grace:   10 * time.Second,
		Log:     log,
	})
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
