package admin

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/policyd/wire"
)

// Wire is `mxdetour-policyd wire`: Postfix wired for what the
// configuration asks, through postconf (policyd/wire).
func Wire(args []string, stdout, stderr io.Writer) int {
	return wiring("wire", args, stdout, stderr)
}

// Unwire is `mxdetour-policyd unwire`: what wire did, undone.
func Unwire(args []string, stdout, stderr io.Writer) int {
	return wiring("unwire", args, stdout, stderr)
}

func wiring(name string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mxdetour-policyd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgHelp := "configuration file (default " + config.DefaultPath + " if it exists, else built-in defaults)"
	if name == "unwire" {
		cfgHelp = "accepted and unused: unwire undoes what wire recorded"
	}
	cfgPath := fs.String("config", "", cfgHelp)
	pfDir := fs.String("postfix-config", "", "Postfix's configuration directory (default: Postfix's own, as postconf finds it)")
	dryRun := fs.Bool("dry-run", false, "print what would change, change nothing")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: mxdetour-policyd %s [-config FILE] [-postfix-config DIR] [-dry-run]\n", name)
		fs.PrintDefaults()
	}
	if code, ok := daemon.ParseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mxdetour-policyd %s: unknown argument %q\n", name, fs.Arg(0))
		fs.Usage()
		return daemon.ExitConfig
	}
	o := wire.Options{ConfigDir: *pfDir, DryRun: *dryRun, Out: stdout}
	var err error
	if name == "unwire" {
		// unwire follows wire's record, not the configuration: the TOML
		// may have changed since.
		err = wire.Unwire(context.Background(), o)
	} else {
		cfg, _, lerr := config.LoadDefault(*cfgPath)
		if lerr != nil {
			fmt.Fprintln(stderr, lerr)
			return daemon.ExitConfig
		}
		err = wire.Wire(context.Background(), wantOf(cfg), o)
	}
	if err != nil {
		fmt.Fprintf(stderr, "mxdetour-policyd %s: %v\n", name, err)
		var ce wire.ConfigError
		if errors.As(err, &ce) {
			return daemon.ExitConfig
		}
		return daemon.ExitFailure
	}
	return 0
}

// wantOf is what the configuration asks of Postfix. The compromise signal
// holds mail through the same policy check as the limits.
func wantOf(cfg *config.Config) wire.Want {
	return wire.Want{
		Socketmap: cfg.Policyd.SocketmapListen,
		Policy:    cfg.Policyd.PolicyListen,
		Milter:    cfg.Milter.Listen,
		Limits:    len(cfg.Limits) > 0 || cfg.Compromise.Enabled || cfg.Compromise.Failures,
		Relay:     cfg.Transports.Relay,
		IPv4:      cfg.Transports.IPv4,
	}
}
