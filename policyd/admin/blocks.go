package admin

import (
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/internal/domain"
	"github.com/mxdetour/mxdetour/policyd/fleet"
	"github.com/mxdetour/mxdetour/policyd/learn"
	"github.com/mxdetour/mxdetour/policyd/server"
)

// Blocks lists the blocks learned from the delivery log, or forgets
// some: `blocks [-config FILE] [-json]`, `blocks [-config FILE] forget
// DOMAIN|PROVIDER`. Each block shows its kind (the rule that recognised
// the refusal) and its route: "relay" for a refusal of our IP, "ipv4" for
// one of our IPv6 address only; a provider-wide block (one that applies to
// every destination of its provider) says so. Forgetting a provider (a
// [providers.NAME] name) forgets every block learned from its hosts. With a [fleet], `blocks` lists the blocks of every host
// from Redis, each with the host that learned it, and `blocks forget`
// forgets on every host.
func Blocks(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mxdetour-policyd blocks", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file")
	asJSON := fs.Bool("json", false, "print JSON")
	if code, ok := daemon.ParseFlags(fs, args); !ok {
		return code
	}
	cfg, _, err := config.LoadDefault(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return daemon.ExitConfig
	}
	// Problems with the state file (set aside, previous copy used) are
	// for the person running the command to see.
	log := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.AddSync(stderr), zapcore.WarnLevel))
	store, err := learn.OpenStore(cfg.Learn.StateFile, log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return daemon.ExitFailure
	}
	fc, name, err := server.OpenFleet(cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return daemon.ExitConfig
	}
	if fc != nil {
		defer fc.Close()
	}
	switch {
	case fs.NArg() == 2 && fs.Arg(0) == "forget":
		if _, ok := cfg.Providers[fs.Arg(1)]; ok {
			return forgetProvider(store, fc, fs.Arg(1), stdout, stderr)
		}
		d, err := domain.Normalize(fs.Arg(1))
		if err != nil {
			fmt.Fprintln(stderr, err)
			return daemon.ExitFailure
		}
		return forget(store, fc, d, stdout, stderr)
	case fs.NArg() != 0:
		fmt.Fprintln(stderr, "usage: mxdetour-policyd blocks [-config FILE] [-json] [forget DOMAIN|PROVIDER]")
		return daemon.ExitConfig
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
		scope := ""
		if b.ProviderWide() {
			scope = "\tscope=provider-wide (every destination of " + b.Provider + ")"
		}
		fmt.Fprintf(stdout, "%s\tmx=%s\tprovider=%s\tkind=%s\troute=%s\tuntil=%s%s%s\n\t%s\n",
			b.Domain, b.MXHost, b.Provider, b.Kind, b.Via(), b.Expires.UTC().Format(time.RFC3339), host, scope, b.Reply)
	}
	return 0
}

// forget forgets the block of d here and, with a fleet, on every host.
func forget(store *learn.Store, fc *fleet.Conn, d string, stdout, stderr io.Writer) int {
	here := store.Forget(d)
	if here {
		if err := store.Save(); err != nil {
			fmt.Fprintln(stderr, err)
			return daemon.ExitFailure
		}
	}
	if fc == nil {
		if !here {
			fmt.Fprintf(stderr, "no learned block for %s\n", d)
			return daemon.ExitFailure
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
		return daemon.ExitFailure
	}
	if !here && n == 0 {
		fmt.Fprintf(stderr, "no learned block for %s on any host\n", d)
		return daemon.ExitFailure
	}
	fmt.Fprintf(stdout, "forgot %s on every host of the fleet (%d hosts had learned it); running daemons drop it within a second\n", d, n)
	return 0
}

// forgetProvider forgets every block learned from the hosts of provider
// name (provider-wide or not), here and, with a fleet, on every host.
func forgetProvider(store *learn.Store, fc *fleet.Conn, name string, stdout, stderr io.Writer) int {
	now := time.Now()
	domains := store.Domains(name, now)
	if fc != nil {
		ctx, cancel := ctxTimeout(5 * time.Second)
		fb, err := fc.Blocks(ctx, now)
		cancel()
		if err != nil {
			fmt.Fprintf(stderr, "the fleet's Redis does not answer (%v): forgetting what this host knows\n", err)
		}
		for _, b := range fb {
			if b.Provider == name && !slices.Contains(domains, b.Domain) {
				domains = append(domains, b.Domain)
			}
		}
	}
	if len(domains) == 0 {
		fmt.Fprintf(stderr, "no learned block from provider %s\n", name)
		return daemon.ExitFailure
	}
	slices.Sort(domains)
	code := 0
	for _, d := range domains {
		code = max(code, forget(store, fc, d, stdout, stderr))
	}
	return code
}
