package admin

import (
	"flag"
	"fmt"
	"io"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/internal/domain"
	"github.com/mxdetour/mxdetour/milter/dkim"
	"github.com/mxdetour/mxdetour/milter/server"
)

const keygenUsage = `usage: mxdetour-milter keygen -domain D -selector S [-algorithm rsa|ed25519] [-bits N] [-dir DIR] [-owner USER]
       mxdetour-milter keygen -next -domain D [-algorithm A] [-config FILE] [-selector S] [-bits N] [-dir DIR] [-owner USER]
      -next writes the next key of D's rotation beside the current one: selector mail -> mail2,
      rsa2026 -> rsa2027 (same algorithm, size and directory); the milter signs with it once
      its record is published, and with the old key beside it for [milter.dkim] rotation_overlap.
       mxdetour-milter keygen -all [-domains FILE] [-dir DIR] [-config FILE] [-postfix-config DIR]
                              [-algorithms rsa,ed25519] [-rsa-selector S] [-ed25519-selector S] [-bits N] [-owner USER]
      -all writes keys for every domain Postfix receives mail for (mydestination, virtual and relay
      domains, myorigin, mydomain) and every domain of FILE (one a line, # comments) that has no key
      yet, into DIR (default: [milter.dkim] key_dir), and prints the records to publish as a zone file.
`

// Keygen writes a new private key (mode 0600) to DIR/DOMAIN.SELECTOR.key,
// gives it to the milter's user, and prints the DNS TXT record to publish
// and the config rows to add.
func Keygen(args []string, stdout, stderr io.Writer) int {
	if slices.Contains(args, "-all") || slices.Contains(args, "--all") {
		return keygenAll(args, stdout, stderr)
	}
	fs := flag.NewFlagSet("mxdetour-milter keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, keygenUsage, "\nflags:\n"); fs.PrintDefaults() }
	dom := fs.String("domain", "", "signing domain (d=)")
	sel := fs.String("selector", "", "selector (s=); with -next, instead of the next generation's name")
	alg := fs.String("algorithm", "", "rsa or ed25519 (default rsa; with -next, the current key's)")
	bits := fs.Int("bits", 0, "RSA key size (default 2048; with -next, the current key's, at least 2048)")
	dir := fs.String("dir", "", "directory for the key file (default .; with -next, the current key's)")
	next := fs.Bool("next", false, "write the next key of the domain's rotation, as named in the config")
	cfgPath := fs.String("config", "", "with -next: configuration file (default "+config.DefaultPath+")")
	owner := fs.String("owner", dkim.DefaultOwner(), "give the key file to this user (default: "+dkim.DaemonUser+" when it exists and we run as root)")
	if code, ok := daemon.ParseFlags(fs, args); !ok {
		return code
	}
	d, err := domain.Normalize(*dom)
	bad := err != nil || fs.NArg() > 0 || (!*next && *sel == "") || (!*next && *cfgPath != "")
	if bad {
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "mxdetour-milter keygen: unknown argument %q\n", fs.Arg(0))
		}
		fs.Usage()
		return exitConfig
	}
	if *owner != "" {
		if _, err := user.Lookup(*owner); err != nil {
			fmt.Fprintf(stderr, "mxdetour-milter keygen: -owner %s: %v\n", *owner, err)
			return exitConfig
		}
	}
	req := keyRequest{domain: d, selector: *sel, algorithm: *alg, bits: *bits, dir: *dir}
	if *next {
		if req, err = nextKey(req, *cfgPath); err != nil {
			fmt.Fprintln(stderr, "mxdetour-milter keygen -next:", err)
			return exitConfig
		}
	}
	req.defaults()
	k, err := dkim.GenerateKey(req.algorithm, req.bits)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	name := d + "." + req.selector + ".key"
	if req.keyDir != nil {
		name = req.keyDir.Name(d, req.selector)
	}
	path := filepath.Join(req.dir, name)
	write := dkim.WriteKeyFile
	if req.replace != "" {
		path, write = req.replace, dkim.ReplaceKeyFile
	}
	if err := write(path, k); err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailure
	}
	abs, _ := filepath.Abs(path)
	owned := ""
	if *owner != "" {
		if err := dkim.Chown(abs, *owner); err != nil {
			fmt.Fprintln(stderr, err)
			return exitFailure
		}
		owned = ", owned by " + *owner
	}
	fmt.Fprintf(stdout, "; private key written to %s (mode 0600%s)\n; publish this record:\n%s\n", abs, owned, dkim.ZoneLine(req.selector, d, k.Public()))
	switch {
	case req.replace != "":
		fmt.Fprintf(stdout, "; it replaces the retired key of %s: publish the record in place of the old one, at the same name\n"+
			"; (or at the target of its CNAME: a customer who delegated %s._domainkey.%s changes nothing), then reload\n", req.selector, req.selector, d)
	case req.keyDir != nil:
		fmt.Fprintf(stdout, "; it is in [milter.dkim] key_dir: the milter reads it at the next reload, no row to add\n")
	default:
		fmt.Fprintf(stdout, "; and add to mxdetour.toml:\n; [[milter.dkim.keys]]\n; domain = %q\n; selector = %q\n; key_file = %q\n", d, req.selector, abs)
	}
	if req.replace != "" {
		fmt.Fprintf(stdout, "; the milter signs with it once it sees its record, with %s beside it for rotation_overlap;\n"+
			"; %s then waits, on standby, for the next rotation.\n", req.current, req.current)
	} else if req.current != "" {
		keep := "the row"
		if req.keyDir != nil {
			keep = "the key file"
		}
		fmt.Fprintf(stdout, "; keep %s of %s: the milter signs with %s once `mxdetour-milter doctor` sees its record,\n"+
			"; with %s beside it for rotation_overlap, and then says in its log when %s._domainkey.%s can go.\n",
			keep, req.current, req.selector, req.current, req.current, d)
	}
	return 0
}

// keyRequest is what to generate.
type keyRequest struct {
	domain, selector, algorithm, dir string
	bits                             int
	current                          string         // with -next: the selector it follows
	replace                          string         // with -next, alternate: the retired key's file, written over
	keyDir                           *dkim.Template // with -next in key_dir: the name it takes there
}

func (r *keyRequest) defaults() {
	if r.algorithm == "" {
		r.algorithm = "rsa"
	}
	if r.bits == 0 {
		r.bits = 2048
	}
	if r.dir == "" {
		r.dir = "."
	}
}

// nextKey fills r from the newest key of the domain's rotation family in
// the configuration: its algorithm, size (at least 2048 bits) and
// directory, and the next selector.
func nextKey(r keyRequest, cfgPath string) (keyRequest, error) {
	cfg, used, err := config.LoadDefault(cfgPath)
	if err != nil {
		return r, err
	}
	all, _, err := dkim.Rows(server.KeyTable(cfg.Milter.DKIM)) // rows and key_dir
	if err != nil {
		return r, err
	}
	var rows []dkim.KeyRow
	for _, k := range all {
		if k.Domain == r.domain {
			rows = append(rows, k)
		}
	}
	if len(rows) == 0 {
		return r, fmt.Errorf("%s has no key for %s: make its first with keygen -domain %s -selector S", config.Source(used), r.domain, r.domain)
	}
	tbl, _, err := dkim.LoadTable(rows, cfg.Milter.DKIM.AllowGroupReadable)
	if err != nil {
		return r, err
	}
	var fams [][]*dkim.Key
	for _, f := range dkim.Families(tbl.Keys()) {
		if r.algorithm == "" || f[0].Algorithm == r.algorithm {
			fams = append(fams, f)
		}
	}
	switch len(fams) {
	case 0:
		return r, fmt.Errorf("%s has no %s key for %s", config.Source(used), r.algorithm, r.domain)
	case 1:
	default:
		var names []string
		for _, f := range fams {
			names = append(names, f[len(f)-1].Selector+" ("+f[0].Algorithm+")")
		}
		return r, fmt.Errorf("%s has several keys for %s: %s; say which with -algorithm, or -selector", config.Source(used), r.domain, strings.Join(names, ", "))
	}
	fam := fams[0]
	cur := fam[len(fam)-1]
	if cfg.Milter.DKIM.RotationSelectors == "alternate" && len(fam) > 1 && r.selector == "" {
		// Two fixed selectors: the new key goes over the retired one.
		if cur, err = standby(cfg, fam, config.Source(used)); err != nil {
			return r, err
		}
		r.replace = cur.File
		r.selector, r.algorithm, r.dir = cur.Selector, cur.Algorithm, filepath.Dir(cur.File)
		if r.bits == 0 && cur.Algorithm == "rsa" {
			r.bits = max(cur.Bits, 2048)
		}
		for _, k := range fam {
			if k != cur {
				r.current = k.Selector
			}
		}
		return r, nil
	}
	r.current = cur.Selector
	if r.selector == "" {
		r.selector = dkim.NextSelector(cur.Selector)
	}
	r.algorithm = cur.Algorithm
	if r.bits == 0 && cur.Algorithm == "rsa" {
		r.bits = max(cur.Bits, 2048)
	}
	if r.dir == "" {
		r.dir = filepath.Dir(cur.File)
	}
	if kd := cfg.Milter.DKIM.KeyDir; kd != "" && filepath.Clean(r.dir) == filepath.Clean(kd) {
		if r.keyDir, err = dkim.ParseTemplate(cfg.Milter.DKIM.KeyFileTemplate); err != nil {
			return r, err
		}
	}
	for _, k := range tbl.Keys() {
		if k.Selector == r.selector {
			return r, fmt.Errorf("%s already has a key with selector %s for %s", config.Source(used), r.selector, r.domain)
		}
	}
	return r, nil
}

// standby is the key of a two-selector family (rotation_selectors =
// "alternate") whose selector takes the next key: the one retired, never
// one that still signs or whose record is not yet published.
func standby(cfg *config.Config, fam []*dkim.Key, cfgName string) (*dkim.Key, error) {
	if len(fam) != 2 {
		return nil, fmt.Errorf("%s: rotation_selectors = \"alternate\" rotates two selectors per family; %s has %d (%s): remove the extra keys",
			cfgName, fam[0].Domain, len(fam), familySelectors(fam))
	}
	c := cfg.Milter.DKIM
	if c.RotationStateFile == "" {
		return nil, fmt.Errorf("%s: rotation_selectors = \"alternate\" needs rotation_state_file: without it no one knows which key of %s is retired", cfgName, familySelectors(fam))
	}
	rot, err := dkim.ReadRotation(c.RotationOverlap.Duration, c.RotationStateFile)
	if err != nil {
		return nil, fmt.Errorf("rotation state: %w (run keygen as root or as the milter's user)", err)
	}
	p := rot.PhaseOf(fam, time.Now())
	switch {
	case len(p.Retired) == 1:
		return p.Retired[0], nil
	case len(p.Old) == 1:
		return nil, fmt.Errorf("%s still signs beside %s until %s: the next key can be written after that",
			p.Old[0].Selector, p.Current.Selector, p.Until.Format(time.RFC3339))
	case p.Since.IsZero():
		return nil, fmt.Errorf("the milter has not seen the record of %s published yet (mxdetour-milter doctor): publish it first", familySelectors(fam))
	}
	return nil, fmt.Errorf("the record of %s's new key is not published yet (mxdetour-milter doctor prints it): publish it, and rotate once it signs", p.Pending[0].Selector)
}

func familySelectors(fam []*dkim.Key) string {
	s := make([]string, len(fam))
	for i, k := range fam {
		s[i] = k.Selector
	}
	return strings.Join(s, ", ")
}
