package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/domain"
	"github.com/mxdetour/mxdetour/milter/dkim"
)

const keygenUsage = `usage: mxdetour-milter keygen -domain D -selector S [-algorithm rsa|ed25519] [-bits N] [-dir DIR] [-owner USER]
       mxdetour-milter keygen -next -domain D [-algorithm A] [-config FILE] [-selector S] [-bits N] [-dir DIR] [-owner USER]
      -next writes the next key of D's rotation beside the current one: selector mail -> mail2,
      rsa2026 -> rsa2027 (same algorithm, size and directory); the milter signs with it once
      its record is published, and with the old key beside it for [milter.dkim] rotation_overlap.
`

// keygen writes a new private key (mode 0600) to DIR/DOMAIN.SELECTOR.key,
// gives it to the milter's user, and prints the DNS TXT record to publish
// and the config rows to add.
func keygen(args []string, stdout, stderr io.Writer) int {
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
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitConfig
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
	path := filepath.Join(req.dir, d+"."+req.selector+".key")
	if err := dkim.WriteKeyFile(path, k); err != nil {
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
	fmt.Fprintf(stdout, "; and add to mxdetour.toml:\n; [[milter.dkim.keys]]\n; domain = %q\n; selector = %q\n; key_file = %q\n", d, req.selector, abs)
	if req.current != "" {
		fmt.Fprintf(stdout, "; keep the row of %s: the milter signs with %s once `mxdetour-milter doctor` sees its record,\n"+
			"; with %s beside it for rotation_overlap, and then says in its log when %s._domainkey.%s can go.\n",
			req.current, req.selector, req.current, req.current, d)
	}
	return 0
}

// keyRequest is what to generate.
type keyRequest struct {
	domain, selector, algorithm, dir string
	bits                             int
	current                          string // with -next: the selector it follows
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
	var rows []config.DKIMKey
	for _, k := range cfg.Milter.DKIM.Keys {
		if k.Domain == r.domain {
			rows = append(rows, k)
		}
	}
	if len(rows) == 0 {
		return r, fmt.Errorf("%s has no key for %s: make its first with keygen -domain %s -selector S", orEmbedded(used), r.domain, r.domain)
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
		return r, fmt.Errorf("%s has no %s key for %s", orEmbedded(used), r.algorithm, r.domain)
	case 1:
	default:
		var names []string
		for _, f := range fams {
			names = append(names, f[len(f)-1].Selector+" ("+f[0].Algorithm+")")
		}
		return r, fmt.Errorf("%s has several keys for %s: %s; say which with -algorithm, or -selector", orEmbedded(used), r.domain, strings.Join(names, ", "))
	}
	cur := fams[0][len(fams[0])-1]
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
	for _, k := range tbl.Keys() {
		if k.Selector == r.selector {
			return r, fmt.Errorf("%s already has a key with selector %s for %s", orEmbedded(used), r.selector, r.domain)
		}
	}
	return r, nil
}
