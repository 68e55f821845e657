// Package wire sets up a Postfix instance for mxdetour, and takes that
// set-up away again, through Postfix's own postconf(1): the routing
// socketmap in transport_maps (socketmap_table(5)) with the rewrite-smtpd
// trivial-rewrite that keeps it away from smtpd, the relay and IPv4
// transports in master.cf, the milter, and the outbound limits'
// check_policy_service (SMTPD_POLICY_README) with the header_checks line
// the milter needs to count the sendmail command's mail — what
// contrib/postfix shows by hand.
//
// Wire changes only what is missing, keeps the administrator's entries
// (ours are added to lists, never put in their place), prints each
// change, and records what it did in the config directory (RecordName) so
// that Unwire can give main.cf and master.cf back byte for byte. It ends
// with `postfix check` and one lookup through Postfix's own client
// (postmap -q), and fails when either does.
package wire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Want is what mxdetour's configuration asks of Postfix; an empty field
// leaves that part unwired.
type Want struct {
	Socketmap string // policyd's socketmap listener: host:port or unix:/path
	Policy    string // policyd's policy listener, asked by the limits
	Milter    string // mxdetour-milter's listener
	Limits    bool   // outbound limits configured: $mxdetour_limits in the restrictions, and (with Milter) mxdetour's header_checks table
	Relay     string // the relay transport, e.g. relay:[mx03.example.net]:587
	IPv4      string // the IPv4-only transport, e.g. smtp-ipv4:
}

// Options says which Postfix instance and how.
type Options struct {
	ConfigDir string    // postconf -c DIR; "" = Postfix's default instance
	DryRun    bool      // print the plan, change nothing
	Out       io.Writer // where every change is printed; nil = discarded
	// The commands; "" = found in PATH, else in /usr/sbin.
	Postconf, Postfix, Postmap string
	// LookupTimeout bounds the closing postmap -q; 0 = 5 s.
	LookupTimeout time.Duration
}

// ConfigError is a usage or configuration problem: fix the TOML or
// Postfix's configuration, then run again (exit 78).
type ConfigError struct{ error }

func (e ConfigError) Unwrap() error { return e.error }

// ProbeAddress is the recipient of the closing lookup: a reserved domain,
// which mxdetour-policyd answers with error:5.1.2 without asking DNS.
const ProbeAddress = "wire-check@mxdetour.invalid"

// Wire brings the instance to what w asks for.
func Wire(ctx context.Context, w Want, o Options) error {
	out := o.out()
	p, err := newPostfix(ctx, o)
	if err != nil {
		return err
	}
	st, err := p.read(ctx)
	if err != nil {
		return err
	}
	rec, err := loadRecord(p.confDir)
	if err != nil {
		return err
	}
	changes, notes, err := plan(ctx, p, st, w, rec)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Postfix instance: %s\n", p.confDir)
	switch {
	case len(changes) == 0:
		fmt.Fprintln(out, "nothing to change: Postfix is already wired for mxdetour")
	case o.DryRun:
		fmt.Fprintln(out, "dry run: these changes would be made:")
	default:
		fmt.Fprintln(out, "changes:")
	}
	for _, c := range changes {
		fmt.Fprintln(out, "  "+describe(c))
	}
	for _, n := range notes {
		fmt.Fprintln(out, "note: "+n)
	}
	if o.DryRun {
		fmt.Fprintln(out, "dry run: nothing was changed")
		return nil
	}
	if len(changes) > 0 {
		if err := commit(ctx, p, rec, changes); err != nil {
			return fmt.Errorf("%w\n%s records what was done: mxdetour-policyd unwire undoes it", err, recordPath(p.confDir))
		}
		fmt.Fprintf(out, "done; %s records it for mxdetour-policyd unwire\n", recordPath(p.confDir))
	}
	return prove(ctx, p, w, o, len(changes) > 0)
}

func (o Options) out() io.Writer {
	if o.Out == nil {
		return io.Discard
	}
	return o.Out
}

// cfFiles are the files wire edits and unwire restores.
var cfFiles = []string{"main.cf", "master.cf"}

// fileOf is the file a change edits; "" for tables.
func fileOf(c *change) string {
	switch c.Kind {
	case kindParam:
		return "main.cf"
	case kindService, kindOption:
		return "master.cf"
	}
	return ""
}

// commit saves the record (main.cf and master.cf as they are, before the
// first change), makes the changes, and records the files as left.
func commit(ctx context.Context, p *postfix, rec *record, changes []*change) (err error) {
	if rec == nil {
		rec = &record{Version: 1, Files: map[string]*original{}}
		for _, f := range cfFiles {
			b, err := os.ReadFile(filepath.Join(p.confDir, f))
			if err != nil {
				return err
			}
			rec.Files[f] = &original{Original: b}
		}
	} else {
		for _, f := range cfFiles {
			o := rec.Files[f]
			if o == nil {
				o = &original{}
				rec.Files[f] = o
			}
			if hashFile(filepath.Join(p.confDir, f)) != o.Wired {
				// Edited since the last wire: going back to the original
				// would undo those edits too.
				o.Original = nil
			}
		}
	}
	rec.Wired = time.Now().UTC().Truncate(time.Second)
	var recorded []*change
	for _, c := range changes {
		// Options of a service wire creates go with the service.
		if c.Kind == kindOption && createdService(rec, changes, c.Name) {
			continue
		}
		recorded = append(recorded, c)
	}
	rec.merge(recorded)
	if err := rec.save(p.confDir); err != nil {
		return fmt.Errorf("saving what wire changes: %w", err)
	}
	defer func() {
		for _, f := range cfFiles {
			rec.Files[f].Wired = hashFile(filepath.Join(p.confDir, f))
		}
		if serr := rec.save(p.confDir); serr != nil && err == nil {
			err = serr
		}
	}()
	for _, c := range changes {
		if err := p.apply(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// createdService reports whether the option change named name
// (service/type/option) is on a service wire creates or created.
func createdService(rec *record, changes []*change, name string) bool {
	svc := name[:strings.LastIndex(name, "/")]
	if rec.addedService(svc) {
		return true
	}
	for _, c := range changes {
		if c.Kind == kindService && c.Name == svc {
			return true
		}
	}
	return false
}

// apply makes one change.
func (p *postfix) apply(ctx context.Context, c *change) error {
	var err error
	switch c.Kind {
	case kindParam:
		_, err = p.conf(ctx, "-e", c.Name+"="+c.After)
	case kindService:
		_, err = p.conf(ctx, "-M", c.Name+"="+c.After)
	case kindOption:
		_, err = p.conf(ctx, "-P", c.Name+"="+c.After)
	case kindFile:
		var f *os.File
		if f, err = os.OpenFile(c.Name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, c.Mode); err != nil {
			return err
		}
		_, err = f.WriteString(c.After)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil && c.Index != "" { // regexp and the like have none
			if _, err = p.run(ctx, p.postmap, c.Table); err == nil {
				c.SHA256 = hashFile(c.Index)
			}
		}
	case kindIndex:
		if _, err = p.run(ctx, p.postmap, c.Table); err == nil {
			c.SHA256 = hashFile(c.Name)
		}
	}
	return err
}

// describe is a change as printed.
func describe(c *change) string {
	was := "was not set"
	if c.Before != nil {
		was = "was: " + quoteEmpty(*c.Before)
	}
	var s string
	switch c.Kind {
	case kindParam:
		s = fmt.Sprintf("main.cf: %s = %s  (%s)", c.Name, c.After, was)
	case kindService:
		s = fmt.Sprintf("master.cf: new service %s: %s", c.Name, c.After)
	case kindOption:
		i := strings.LastIndex(c.Name, "/")
		s = fmt.Sprintf("master.cf: %s: -o %s=%s  (%s)", c.Name[:i], c.Name[i+1:], c.After, was)
	case kindFile:
		if c.Index == "" {
			s = fmt.Sprintf("create %s (mode %04o), for %s", c.Name, c.Mode, c.Table)
		} else {
			s = fmt.Sprintf("create %s (mode %04o), empty but for a comment, and postmap %s", c.Name, c.Mode, c.Table)
		}
	case kindIndex:
		s = fmt.Sprintf("postmap %s (its index %s is missing)", c.Table, c.Name)
	}
	if c.Why != "" {
		s += "\n      " + c.Why
	}
	return s
}

func quoteEmpty(s string) string {
	if s == "" {
		return `""`
	}
	return s
}

// prove runs `postfix check`, reloads a running Postfix after changes, and
// looks one address up through postmap -q, as Postfix's queue manager
// will.
func prove(ctx context.Context, p *postfix, w Want, o Options, changed bool) error {
	out := o.out()
	res, err := p.check(ctx, 2*time.Minute)
	if err != nil || strings.TrimSpace(res) != "" {
		if err == nil {
			err = errors.New("it printed warnings")
		}
		return fmt.Errorf("postfix check: %v:\n%s\nfix what it names; the wiring is in place (mxdetour-policyd unwire undoes it)", err, strings.TrimSpace(res))
	}
	fmt.Fprintln(out, "postfix check: OK")
	if changed {
		if p.running(ctx) {
			if _, err := p.run(ctx, p.postfix, "reload"); err != nil {
				return err
			}
			fmt.Fprintln(out, "postfix reload: done")
		} else {
			fmt.Fprintln(out, "Postfix is not running: the changes apply when it starts")
		}
	}
	if w.Socketmap == "" {
		fmt.Fprintln(out, "no socketmap configured (policyd.socketmap_listen): no lookup to try")
		return nil
	}
	return lookup(ctx, p, w.Socketmap, o.LookupTimeout, out)
}

// lookup asks the socketmap for ProbeAddress with postmap -q and wants
// mxdetour's answer for reserved domains.
func lookup(ctx context.Context, p *postfix, listen string, timeout time.Duration, out io.Writer) error {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	// postmap runs here, not in the queue directory: the full path.
	addr := listen
	if !strings.HasPrefix(listen, "unix:") {
		var err error
		if addr, err = inetAddress("policyd.socketmap_listen", listen); err != nil {
			return err
		}
	}
	table := "socketmap:" + addr + ":transport"
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.postmap, p.withDir([]string{"-q", ProbeAddress, table})...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	answer := strings.TrimSpace(stdout.String())
	start := "start it: systemctl enable --now mxdetour-policyd-socketmap.socket mxdetour-policyd.socket mxdetour-policyd"
	switch {
	case err == nil && strings.HasPrefix(answer, "error:5.1.2"):
		fmt.Fprintf(out, "postmap -q %s %s: %s\nmxdetour-policyd answers Postfix\n", ProbeAddress, table, answer)
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("mxdetour-policyd is not answering on %s: postmap -q %s %s got no answer within %s; %s (systemctl status mxdetour-policyd says why)",
			addr, ProbeAddress, table, timeout, start)
	case err == nil:
		return fmt.Errorf("%s answered %q for %s, where mxdetour-policyd answers error:5.1.2: is another program listening there?", addr, answer, ProbeAddress)
	case answer == "" && stderr.Len() == 0:
		return fmt.Errorf("%s answered NOTFOUND for %s, where mxdetour-policyd answers error:5.1.2: it is serving without a usable configuration (systemctl status mxdetour-policyd; mxdetour-policyd -check-config), or another program listens there",
			addr, ProbeAddress)
	}
	return fmt.Errorf("mxdetour-policyd is not answering on %s (%s); %s", addr, firstLine(stderr.String()), start)
}

// firstLine is the first thing a Postfix command complained of, without
// its "postmap: warning: " prefix.
func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	if _, rest, ok := strings.Cut(line, ": "); ok {
		line = rest
	}
	for _, p := range []string{"warning: ", "fatal: ", "error: "} {
		line = strings.TrimPrefix(line, p)
	}
	return line
}
