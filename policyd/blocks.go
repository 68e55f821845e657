package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/domain"
	"github.com/mxdetour/mxdetour/policyd/learn"
)

// blocksCommand lists the blocks learned from the delivery log, or forgets
// one: `blocks [-config FILE] [-json]`, `blocks [-config FILE] forget DOMAIN`.
// Each block shows its kind (the rule that recognised the refusal) and its
// route: "relay" for a refusal of our IP, "ipv4" for one of our IPv6
// address only.
func blocksCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mxdetour-policyd blocks", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
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
	switch {
	case fs.NArg() == 2 && fs.Arg(0) == "forget":
		d, err := domain.Normalize(fs.Arg(1))
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitFailure
		}
		if !store.Forget(d) {
			fmt.Fprintf(stderr, "no learned block for %s\n", d)
			return exitFailure
		}
		if err := store.Save(); err != nil {
			fmt.Fprintln(stderr, err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "forgot %s; a running mxdetour-policyd drops it within 10 seconds, or at once on reload (SIGHUP)\n", d)
		return 0
	case fs.NArg() != 0:
		fmt.Fprintln(stderr, "usage: mxdetour-policyd blocks [-config FILE] [-json] [forget DOMAIN]")
		return exitConfig
	}
	blocks := store.List(time.Now())
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
		fmt.Fprintf(stdout, "%s\tmx=%s\tprovider=%s\tkind=%s\troute=%s\tuntil=%s\n\t%s\n",
			b.Domain, b.MXHost, b.Provider, b.Kind, b.Via(), b.Expires.UTC().Format(time.RFC3339), b.Reply)
	}
	return 0
}
