package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/domain"
	"github.com/mxdetour/mxdetour/policyd/fleet"
	"github.com/mxdetour/mxdetour/policyd/learn"
)

// blocksCommand lists the blocks learned from the delivery log, or forgets
// one: `blocks [-config FILE] [-json]`, `blocks [-config FILE] forget DOMAIN`.
// Each block shows its kind (the rule that recognised the refusal) and its
// route: "relay" for a refusal of our IP, "ipv4" for one of our IPv6
// address only. With a [fleet], `blocks` lists the blocks of every host
// from Redis, each with the host that learned it, and `blocks forget`
// forgets on every host.
func blocksCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mxdetour-policyd blocks", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitConfig
	}
	cfg, _, err := config.LoadDefault(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	// Problems with the state file (set aside, previous copy used) are
	// for the person running the command to see.
	log := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.AddSync(stderr), zapcore.WarnLevel))
	store, err := learn.OpenStore(cfg.Learn.StateFile, log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailure
	}
	fc, name, err := openFleet(cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	if fc != nil {
		defer fc.Close()
	}
	switch {
	case fs.NArg() == 2 && fs.Arg(0) == "forget":
		d, err := domain.Normalize(fs.Arg(1))
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitFailure
		}
		return forget(store, fc, d, stdout, stderr)
	case fs.NArg() != 0:
		fmt.Fprintln(stderr, "usage: mxdetour-policyd blocks [-config FILE] [-json] [forget DOMAIN]")
		return exitConfig
	}
	blocks := store.List(time.Now())
	if fc != nil {
		ctx, cancel := ctxTimeout(5 * time.Second)
		fb, err := fc.Blocks(ctx, time.Now())
		cancel()
		if err != nil {
			fmt.Fprintf(stderr, "the fleet's Redis does not answer (%v): showing what this host knows\n", err)
		} else {
			blocks = fb
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(blocks)
		return 0
	}
	if len(blocks) == 0 {
		fmt.Fprintln(stdout, "no learned blocks")
	}
	for _, b := range blocks {
		host := ""
		if fc != nil {
			host = "\thost=" + cmp.Or(b.Host, name)
		}
		fmt.Fprintf(stdout, "%s\tmx=%s\tprovider=%s\tkind=%s\troute=%s\tuntil=%s%s\n\t%s\n",
			b.Domain, b.MXHost, b.Provider, b.Kind, b.Via(), b.Expires.UTC().Format(time.RFC3339), host, b.Reply)
	}
	return 0
}

// forget forgets the block of d here and, with a fleet, on every host.
func forget(store *learn.Store, fc *fleet.Conn, d string, stdout, stderr io.Writer) int {
	here := store.Forget(d)
	if here {
		if err := store.Save(); err != nil {
			fmt.Fprintln(stderr, err)
			return exitFailure
		}
	}
	if fc == nil {
		if !here {
			fmt.Fprintf(stderr, "no learned block for %s\n", d)
			return exitFailure
		}
		fmt.Fprintf(stdout, "forgot %s; a running mxdetour-policyd drops it within 10 seconds, or at once on reload (SIGHUP)\n", d)
		return 0
	}
	f, ok := store.Tombstone(d)
	if !ok {
		f = learn.Forgotten{Domain: d, At: time.Now()}
	}
	ctx, cancel := ctxTimeout(10 * time.Second)
	defer cancel()
	n, err := fc.Forget(ctx, f)
	if err != nil {
		if here {
			fmt.Fprintf(stderr, "forgot %s on this host only: %v\nthe other hosts keep it; run this again when Redis answers\n", d, err)
		} else {
			fmt.Fprintln(stderr, err)
		}
		return exitFailure
	}
	if !here && n == 0 {
		fmt.Fprintf(stderr, "no learned block for %s on any host\n", d)
		return exitFailure
	}
	fmt.Fprintf(stdout, "forgot %s on every host of the fleet (%d hosts had learned it); running daemons drop it within a second\n", d, n)
	return 0
}
