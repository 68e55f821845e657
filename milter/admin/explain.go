package admin

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/internal/geo"
	"github.com/mxdetour/mxdetour/milter/dkim"
	"github.com/mxdetour/mxdetour/milter/filter"
	"github.com/mxdetour/mxdetour/milter/server"
)

const explainUsage = `usage: mxdetour-milter explain -from ADDR [-auth USER] [-client IP|local] [-to ADDR[,ADDR...]] [-config FILE]
  says what the milter would do with such a message, without sending one: whether the country
  rules refuse the client at MAIL FROM (and which rule), which recipients the reserved-domain rule
  refuses at RCPT, and which keys sign it (domain, selector, algorithm, where each key came from),
  or why it would leave unsigned, in the words of the milter's per-message log line.
  -client local is mail Postfix posts itself: the sendmail command, bounces and notices.
`

// Explain answers "what would the milter do with this message?" from the
// configuration, the keys and the country data, as the daemon loads them,
// and the rotation state the daemon keeps.
func Explain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mxdetour-milter explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, explainUsage, "\nflags:\n"); fs.PrintDefaults() }
	cfgPath := fs.String("config", "", "configuration file (default "+config.DefaultPath+" if it exists, else built-in defaults)")
	from := fs.String("from", "", "the From address")
	auth := fs.String("auth", "", "the SASL login the client authenticated with")
	client := fs.String("client", "", "the client's IP address, or \"local\" for mail Postfix posts itself")
	var to []string
	fs.Func("to", "a recipient (repeat, or separate with commas)", func(v string) error {
		for _, a := range strings.Split(v, ",") {
			if a = strings.TrimSpace(a); a != "" {
				to = append(to, a)
			}
		}
		return nil
	})
	if code, ok := daemon.ParseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 || *from == "" {
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "mxdetour-milter explain: unknown argument %q\n", fs.Arg(0))
		}
		fs.Usage()
		return exitConfig
	}
	cfg, used, err := config.LoadDefault(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	q := filter.Query{From: *from, To: to, Sender: filter.Sender{Auth: *auth}}
	switch *client {
	case "":
	case "local":
		q.Client, q.Local = netip.MustParseAddr("127.0.0.1"), true
	default:
		a, err := netip.ParseAddr(strings.Trim(*client, "[]"))
		if err != nil {
			fmt.Fprintf(stderr, "mxdetour-milter explain: -client %q: not an IP address (or \"local\")\n", *client)
			return exitConfig
		}
		q.Client = a.Unmap()
	}
	q.Trusted = q.Client.IsValid() && inTrusted(q.Client, cfg.Milter.TrustedNetworks)

	b := server.Build(cfg, zap.NewNop(), nil)
	defer b.Close()
	rot, rotNote := explainRotation(cfg.Milter.DKIM)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e := filter.Explain(ctx, b.State(), rot, q)
	printExplanation(stdout, config.Source(used), q, cfg, e)
	for _, p := range b.Problems() {
		fmt.Fprintf(stdout, "note: %v\n", p)
	}
	if rotNote != "" && len(e.Sign.Waiting) > 0 {
		fmt.Fprintln(stdout, "note:", rotNote)
	}
	return 0
}

// explainRotation is the rotation state the daemon keeps, read-only.
func explainRotation(c config.DKIM) (*dkim.Rotation, string) {
	if c.RotationStateFile == "" {
		return dkim.ReadOnlyRotation(c.RotationOverlap.Duration), "rotation_state_file is not set: the running milter's view of which records are published is not known here; keys are picked as if none had been seen"
	}
	r, err := dkim.ReadRotation(c.RotationOverlap.Duration, c.RotationStateFile)
	if err != nil {
		return dkim.ReadOnlyRotation(c.RotationOverlap.Duration), fmt.Sprintf("rotation state %s unreadable (%v): keys are picked as if no record had been seen", c.RotationStateFile, err)
	}
	return r, ""
}

func inTrusted(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func printExplanation(w io.Writer, cfgName string, q filter.Query, cfg *config.Config, e filter.Explanation) {
	who := "client not given"
	switch {
	case q.Local:
		who = "posted by Postfix itself (sendmail, bounces; emulated client 127.0.0.1)"
	case q.Client.IsValid() && q.Trusted:
		who = "client " + q.Client.String() + " (in trusted_networks)"
	case q.Client.IsValid():
		who = "client " + q.Client.String() + " (not in trusted_networks)"
	}
	if q.Auth != "" {
		who += ", authenticated as " + q.Auth
	} else {
		who += ", not authenticated"
	}
	fmt.Fprintf(w, "%s: From %s, %s\n", cfgName, q.From, who)

	c := e.Country
	switch {
	case c.Refused:
		fmt.Fprintf(w, "MAIL FROM  refused by %s (%s): %s\n", c.Verdict.Name, c.Verdict.Matched, c.Reply)
	case c.Exempt != "":
		fmt.Fprintf(w, "MAIL FROM  accepted: country rules not asked: %s\n", c.Exempt)
	case c.Err != nil:
		fmt.Fprintf(w, "MAIL FROM  accepted: country lookup failed (%v); the rules fail open\n", c.Err)
	case c.Verdict.Rule < 0:
		fmt.Fprintf(w, "MAIL FROM  accepted: no country rule matches%s\n", country(c.Verdict))
	case c.Verdict.Allow:
		fmt.Fprintf(w, "MAIL FROM  accepted: allowed by %s (%s)\n", c.Verdict.Name, c.Verdict.Matched)
	case c.Verdict.LogOnly:
		fmt.Fprintf(w, "MAIL FROM  accepted: %s (%s) matches, but logs only (action = \"log\")\n", c.Verdict.Name, c.Verdict.Matched)
	}
	accepted := 0
	for _, r := range e.Rcpts {
		if r.Refused {
			fmt.Fprintf(w, "RCPT TO    %s refused by the reserved-domain rule: %s\n", r.Addr, r.Reply)
			continue
		}
		accepted++
		fmt.Fprintf(w, "RCPT TO    %s accepted\n", r.Addr)
	}
	if len(e.Rcpts) > 0 && accepted == 0 && !c.Refused {
		fmt.Fprintln(w, "DATA       not reached: every recipient refused")
	}
	if c.Refused {
		fmt.Fprintln(w, "DATA       not reached: the client is refused at MAIL FROM; had it been accepted:")
	}
	s := e.Sign
	if s.Why != "" {
		fmt.Fprintf(w, "DKIM       not signed: %s\n", s.Why)
	} else {
		fmt.Fprintf(w, "DKIM       signed d=%s (From domain %s), %d signature(s):\n", s.Keys[0].Domain, s.FromDomain, len(s.Keys))
		for _, k := range e.Keys {
			fmt.Fprintf(w, "             s=%s %s: %s\n", k.Key.Selector, algorithm(k.Key), k.Source)
		}
	}
	for _, k := range s.Waiting {
		fmt.Fprintf(w, "             not signing with s=%s %s now: a rotation's key whose record is not yet seen published, or an old one retired (mxdetour-milter doctor says which)\n", k.Selector, algorithm(k))
	}
	if s.Why != "" {
		fmt.Fprintf(w, "log line   \"message\" ... not_signed=%q\n", s.Why)
	}
}

func country(v geo.Verdict) string {
	if v.Country == "" {
		return " (country unknown)"
	}
	return " (country " + v.Country + ")"
}

func algorithm(k *dkim.Key) string {
	if k.Algorithm == "rsa" {
		return fmt.Sprintf("rsa-sha256 (%d bits)", k.Bits)
	}
	return "ed25519-sha256"
}
