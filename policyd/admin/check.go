package admin

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/internal/dnsbl"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/policyd/respond"
	"github.com/mxdetour/mxdetour/policyd/route"
	"github.com/mxdetour/mxdetour/policyd/server"
)

// CheckResult is one argument's decision as `check -json` prints it.
type CheckResult struct {
	Input     string      `json:"input"`
	Domain    string      `json:"domain"`
	Route     route.Route `json:"route"`
	Transport string      `json:"transport,omitempty"`
	Reason    string      `json:"reason"`
	Provider  string      `json:"provider,omitempty"`
	Method    string      `json:"method,omitempty"`
	MX        []lookup.MX `json:"mx,omitempty"`
	Policy    string      `json:"policy"`
	Socketmap string      `json:"socketmap"`
	DryRun    bool        `json:"dry_run,omitempty"`
	Block     *checkBlock `json:"block,omitempty"` // the learned block that applied
	// Blocklists are our addresses' states on the zones of the provider
	// that matched.
	Blocklists []checkListing `json:"blocklists,omitempty"`
	Why        []string       `json:"why"`
}

// checkListing is one of our addresses on one zone, as `check` shows it.
// State "unknown" says why (cause, error) and how routing counts it.
type checkListing struct {
	Zone     string `json:"zone"`
	Addr     string `json:"address"`
	State    string `json:"state"` // listed, clean or unknown
	Cause    string `json:"cause,omitempty"`
	Error    string `json:"error,omitempty"`
	RoutedAs string `json:"routed_as,omitempty"` // while unknown: "listed" (last known) or "not listed"
}

// checkBlock is the learned block behind a decision, as `check` shows it.
type checkBlock struct {
	Domain string    `json:"domain"`
	MXHost string    `json:"mx_host"`
	Kind   string    `json:"kind"`
	Route  string    `json:"route"` // what the block asks for: "relay" or "ipv4"
	Until  time.Time `json:"until"`
}

// Check prints, per address or domain, the decision, the answer each
// protocol would give and why. It exits 0 when every argument was decided.
func Check(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mxdetour-policyd check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file")
	asJSON := fs.Bool("json", false, "print JSON")
	if code, ok := daemon.ParseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: mxdetour-policyd check [-config FILE] [-json] ADDRESS|DOMAIN ...")
		return daemon.ExitConfig
	}
	cfg, _, err := config.LoadDefault(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return daemon.ExitConfig
	}
	s, err := server.Open(cfg, zap.NewNop())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return daemon.ExitFailure
	}
	// A person is waiting, not Postfix: give DNS its full time.
	wait := time.Duration(cfg.DNS.Attempts+1)*cfg.DNS.Timeout.Duration + time.Second
	g := s.Current()
	if m := g.Monitor(); m != nil {
		ctx, cancel := ctxTimeout(wait)
		m.CheckNow(ctx)
		cancel()
	}
	var results []CheckResult
	code := 0
	for _, arg := range fs.Args() {
		addr := arg
		if !strings.Contains(arg, "@") {
			addr = "postmaster@" + arg
		}
		ctx, cancel := ctxTimeout(wait)
		dec := g.Engine().Explain(ctx, addr)
		cancel()
		if dec.Reason == route.ReasonNoDomain {
			code = daemon.ExitFailure
		}
		r := describe(arg, dec)
		r.Blocklists = listings(g, dec.Provider)
		results = append(results, r)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(results)
		return code
	}
	for _, r := range results {
		printResult(stdout, r)
	}
	return code
}

func describe(input string, d route.Decision) CheckResult {
	why := d.Detail
	if why == nil {
		why = []string{}
	}
	var b *checkBlock
	if d.Block != nil {
		b = &checkBlock{Domain: d.Block.Domain, MXHost: d.Block.MXHost, Kind: d.Block.Kind,
			Route: d.Block.Via(), Until: d.Block.Expires.UTC()}
	}
	return CheckResult{
		Input: input, Domain: d.Domain, Route: d.Route, Transport: d.Transport,
		Reason: string(d.Reason), Provider: d.Provider, Method: d.Method, MX: d.MX,
		Policy:    "action=" + respond.PolicyAction(d),
		Socketmap: respond.SocketmapReply(d).String(),
		DryRun:    d.DryRun, Block: b, Why: why,
	}
}

// listings are our addresses' states on the zones provider uses.
func listings(g *server.Generation, provider string) []checkListing {
	p, ok := g.Config().Providers[provider]
	if g.Monitor() == nil || !ok {
		return nil
	}
	var out []checkListing
	for _, r := range g.Monitor().Results() {
		if !slices.Contains(p.Zones, r.Zone) {
			continue
		}
		l := checkListing{Zone: r.Zone, Addr: r.Addr.String(), State: r.State.String()}
		if r.State == dnsbl.Unknown {
			l.Cause, l.RoutedAs = string(r.Cause), "not listed"
			if r.Known == dnsbl.Listed {
				l.RoutedAs = "listed"
			}
			if r.Err != nil {
				l.Error = r.Err.Error()
			}
		}
		out = append(out, l)
	}
	return out
}

func printResult(w io.Writer, r CheckResult) {
	fmt.Fprintf(w, "%s\n", r.Input)
	fmt.Fprintf(w, "  domain:    %s\n", r.Domain)
	route := string(r.Route)
	if r.Transport != "" {
		route += " (" + r.Transport + ")"
	}
	if r.DryRun {
		route += " [dry run: answered as direct]"
	}
	fmt.Fprintf(w, "  route:     %s\n", route)
	fmt.Fprintf(w, "  reason:    %s\n", r.Reason)
	if r.Provider != "" {
		fmt.Fprintf(w, "  provider:  %s (%s)\n", r.Provider, r.Method)
	}
	if b := r.Block; b != nil {
		fmt.Fprintf(w, "  block:     %s (route %s) learned for %s from %s, until %s\n",
			b.Kind, b.Route, b.Domain, b.MXHost, b.Until.Format(time.RFC3339))
	}
	for _, l := range r.Blocklists {
		line := l.State
		if l.State == dnsbl.Unknown.String() {
			line = fmt.Sprintf("unknown (%s: %s); routed as %s", l.Cause, l.Error, l.RoutedAs)
		}
		fmt.Fprintf(w, "  blocklist: %s on %s: %s\n", l.Addr, l.Zone, line)
	}
	fmt.Fprintf(w, "  policy:    %s\n", r.Policy)
	fmt.Fprintf(w, "  socketmap: %s\n", r.Socketmap)
	for _, y := range r.Why {
		fmt.Fprintf(w, "  why:       %s\n", y)
	}
}
