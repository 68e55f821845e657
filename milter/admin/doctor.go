package admin

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/internal/dnsbl"
	"github.com/mxdetour/mxdetour/internal/geo"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/setup"
	"github.com/mxdetour/mxdetour/milter/dkim"
	"github.com/mxdetour/mxdetour/milter/server"
)

const doctorUsage = "usage: mxdetour-milter doctor [-config FILE] [-json]\n" +
	"  checks what DNS publishes for the configured keys, signing domains and outbound addresses,\n" +
	"  and that the country data ([milter.geo]) loads and is younger than max_age;\n" +
	"  exit 0 ok, 1 warning, 2 critical (as Nagios plugins)\n"

// Doctor checks DNS against the configuration: every key's record, SPF,
// DMARC, reverse DNS and the HELO name, one line each with its fix.
func Doctor(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mxdetour-milter doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, doctorUsage, "\nflags:\n"); fs.PrintDefaults() }
	cfgPath := fs.String("config", "", "configuration file (default "+config.DefaultPath+" if it exists)")
	asJSON := fs.Bool("json", false, "print the findings as JSON")
	if code, ok := daemon.ParseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mxdetour-milter doctor: unknown argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitConfig
	}
	cfg, _, err := config.LoadDefault(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	keys, _, err := dkim.Load(server.KeyTable(cfg.Milter.DKIM)) // rows and key_dir
	if err != nil {
		fmt.Fprintf(stderr, "%v\n(the doctor compares each record with the private key: run it as root or as the milter's user)\n", err)
		return exitConfig
	}
	res, err := lookup.New(setup.Lookup(cfg.DNS), zap.NewNop())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	d := dkim.Doctor{Keys: keys, Addrs: outbound(cfg.Self), Helo: cfg.Self.HeloName,
		Alternate: cfg.Milter.DKIM.RotationSelectors == "alternate"}
	var stateErr error
	if f := cfg.Milter.DKIM.RotationStateFile; f != "" {
		d.Rotation, stateErr = dkim.ReadRotation(cfg.Milter.DKIM.RotationOverlap.Duration, f)
		if stateErr != nil {
			d.Rotation = nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	findings := d.Run(ctx, res)
	if stateErr != nil {
		findings = append(findings, dkim.Finding{Status: dkim.Warning, Check: "rotation", Subject: cfg.Milter.DKIM.RotationStateFile,
			Message: "rotation state unreadable (" + stateErr.Error() + "): rotations shown as if not begun", Fix: "let the milter rewrite it: remove the file"})
	}
	findings = append(findings, geoFindings(cfg.Milter.Geo, time.Now())...)
	worst := dkim.Worst(findings)
	if *asJSON {
		e := json.NewEncoder(stdout)
		e.SetIndent("", "  ")
		_ = e.Encode(struct {
			Status   dkim.Status    `json:"status"`
			Findings []dkim.Finding `json:"findings"`
		}{worst, findings})
	} else {
		printFindings(stdout, worst, findings)
	}
	return int(worst)
}

// printFindings writes a Nagios-style summary line, then one line per
// finding with its fix.
func printFindings(w io.Writer, worst dkim.Status, fs []dkim.Finding) {
	n := map[dkim.Status]int{}
	for _, f := range fs {
		n[f.Status]++
	}
	fmt.Fprintf(w, "DOCTOR %s: %d critical, %d warning, %d ok\n", strings.ToUpper(worst.String()), n[dkim.Critical], n[dkim.Warning], n[dkim.OK])
	for _, f := range fs {
		line := fmt.Sprintf("%-8s %s %s: %s", strings.ToUpper(f.Status.String()), f.Check, f.Subject, f.Message)
		if f.Fix != "" {
			line += "; fix: " + f.Fix
		}
		fmt.Fprintln(w, line)
	}
}

// geoFindings checks the country data of a file source: that it loads
// (critical: no country rule applies without it) and that it is younger
// than max_age (a warning). A DNS source or none gives no finding.
func geoFindings(g config.Geo, now time.Time) []dkim.Finding {
	if g.Source != "mmdb" && g.Source != "delegated" {
		return nil
	}
	subject := g.MMDBFile
	if g.Source == "delegated" {
		subject = strings.Join(g.DelegatedFiles, ",")
	}
	src, err := geo.Open(setup.Geo(g), nil)
	if err != nil {
		return []dkim.Finding{{Status: dkim.Critical, Check: "geo", Subject: subject,
			Message: "country data does not load (" + err.Error() + "): no country rule applies",
			Fix:     "install the file (geoipupdate, or fetch the RIR files) or fix milter.geo, then reload"}}
	}
	b := geo.NewBlocker(src, geo.Policy{})
	defer b.Close()
	if b.Built().IsZero() {
		return []dkim.Finding{{Status: dkim.OK, Check: "geo", Subject: subject, Message: "country data loads; its date is unknown"}}
	}
	age, stale := b.Stale(g.MaxAge.Duration, now)
	msg := fmt.Sprintf("country data built %s, %s old", b.Built().UTC().Format(time.DateOnly), days(age))
	if stale {
		return []dkim.Finding{{Status: dkim.Warning, Check: "geo", Subject: subject,
			Message: msg + ", older than milter.geo.max_age (" + days(g.MaxAge.Duration) + ")",
			Fix:     "update it (geoipupdate, or fetch the RIR files again) and reload the milter"}}
	}
	return []dkim.Finding{{Status: dkim.OK, Check: "geo", Subject: subject, Message: msg}}
}

// days writes d in whole days ("31d"), or hours below two days.
func days(d time.Duration) string {
	if d < 48*time.Hour {
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// outbound is [self] ipv4 and ipv6, else the host's global addresses.
func outbound(s config.Self) []netip.Addr {
	addrs := append(append([]netip.Addr{}, s.IPv4...), s.IPv6...)
	if len(addrs) == 0 {
		v4, v6, _ := dnsbl.SelfAddresses()
		addrs = append(v4, v6...)
	}
	return addrs
}
