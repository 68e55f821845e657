package admin

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/internal/domain"
	"github.com/mxdetour/mxdetour/internal/postfix"
	"github.com/mxdetour/mxdetour/milter/dkim"
	"github.com/mxdetour/mxdetour/milter/server"
)

// keygenAll writes the keys missing for the domains Postfix serves and
// those of -domains, into the key directory, and prints every record to
// publish: its whole output is a zone-file fragment.
func keygenAll(args []string, stdout, stderr io.Writer) int {
	year := time.Now().Format("2006")
	fs := flag.NewFlagSet("mxdetour-milter keygen -all", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, keygenUsage, "\nflags:\n"); fs.PrintDefaults() }
	fs.Bool("all", true, "keys for every domain that has none")
	domFile := fs.String("domains", "", "file of more domains, one a line (# comments)")
	dir := fs.String("dir", "", "directory for the key files (default: [milter.dkim] key_dir)")
	cfgPath := fs.String("config", "", "configuration file (default "+config.DefaultPath+")")
	pfDir := fs.String("postfix-config", "", "Postfix configuration directory (default: Postfix's own); \"-\" to ask Postfix nothing")
	algs := fs.String("algorithms", "rsa,ed25519", "algorithms of the keys of each domain, comma-separated")
	rsaSel := fs.String("rsa-selector", "rsa"+year, "selector of the RSA keys")
	edSel := fs.String("ed25519-selector", "ed"+year, "selector of the Ed25519 keys")
	bits := fs.Int("bits", 2048, "RSA key size")
	owner := fs.String("owner", dkim.DefaultOwner(), "give the key files to this user (default: "+dkim.DaemonUser+" when it exists and we run as root)")
	if code, ok := daemon.ParseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mxdetour-milter keygen -all: unknown argument %q\n", fs.Arg(0))
		return exitConfig
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "mxdetour-milter keygen -all: "+format+"\n", a...)
		return code
	}
	if *owner != "" {
		if _, err := user.Lookup(*owner); err != nil {
			return fail(exitConfig, "-owner %s: %v", *owner, err)
		}
	}
	sels := map[string]string{"rsa": *rsaSel, "ed25519": *edSel}
	var want []string
	for _, a := range strings.Split(*algs, ",") {
		a = strings.TrimSpace(a)
		if sels[a] == "" || strings.Contains(sels[a], ".") || slices.Contains(want, a) {
			return fail(exitConfig, "-algorithms %q: give rsa and/or ed25519, each with a selector of one label", *algs)
		}
		want = append(want, a)
	}
	cfg, used, err := config.LoadDefault(*cfgPath)
	if err != nil {
		return fail(exitConfig, "%v", err)
	}
	dc := cfg.Milter.DKIM
	if *dir != "" {
		dc.KeyDir, _ = filepath.Abs(*dir)
	}
	if dc.KeyDir == "" {
		return fail(exitConfig, "%s sets no [milter.dkim] key_dir: set it (e.g. /etc/mxdetour/dkim) or give -dir", config.Source(used))
	}
	tpl, err := dkim.ParseTemplate(dc.KeyFileTemplate)
	if err != nil {
		return fail(exitConfig, "%v", err)
	}
	names, err := allDomains(*pfDir, *domFile, stderr)
	if err != nil {
		return fail(exitConfig, "%v", err)
	}
	rows, _, err := dkim.Rows(server.KeyTable(dc))
	if err != nil {
		return fail(exitFailure, "%v", err)
	}
	doms, skipped := signingDomains(names)
	var todo []dkim.NewKey
	var have []string
	for _, d := range doms {
		if sel := keyed(rows, d); sel != "" {
			have = append(have, fmt.Sprintf("%s (%s)", d, sel))
			continue
		}
		for _, a := range want {
			todo = append(todo, dkim.NewKey{Domain: d, Selector: sels[a], Algorithm: a, Bits: *bits})
		}
	}
	fmt.Fprintf(stdout, "; mxdetour-milter keygen -all: %d domains, %d with keys already (left alone), %d keys to write into %s\n",
		len(doms), len(have), len(todo), dc.KeyDir)
	for _, s := range skipped {
		fmt.Fprintf(stdout, "; skipped %s\n", s)
	}
	for _, h := range have {
		fmt.Fprintf(stdout, "; has keys already: %s\n", h)
	}
	if err := dkim.GenerateKeys(todo); err != nil {
		return fail(exitConfig, "%v", err)
	}
	code := 0
	for _, k := range todo {
		path := filepath.Join(dc.KeyDir, tpl.Name(k.Domain, k.Selector))
		if err := dkim.WriteKeyFile(path, k.Signer); err != nil {
			fmt.Fprintf(stderr, "mxdetour-milter keygen -all: %v\n", err)
			code = exitFailure
			continue
		}
		if *owner != "" {
			if err := dkim.Chown(path, *owner); err != nil {
				fmt.Fprintf(stderr, "mxdetour-milter keygen -all: %v\n", err)
				code = exitFailure
			}
		}
		fmt.Fprintf(stdout, "; %s (%s)\n%s\n", path, k.Algorithm, dkim.ZoneLine(k.Selector, k.Domain, k.Signer.Public()))
	}
	if len(todo) > 0 {
		how := "systemctl reload mxdetour-milter"
		if dc.KeyDir != filepath.Clean(cfg.Milter.DKIM.KeyDir) {
			how = "set [milter.dkim] key_dir = \"" + dc.KeyDir + "\" in " + config.Source(used) + ", then " + how
		}
		fmt.Fprintf(stdout, "; publish these records, then %s: the milter reads key_dir at reload and signs with the new keys\n", how)
	}
	return code
}

// allDomains gathers the domain names of Postfix (unless pfDir is "-")
// and of the file domFile.
func allDomains(pfDir, domFile string, stderr io.Writer) ([]string, error) {
	var names []string
	if pfDir != "-" {
		dir := pfDir
		ds, skipped, err := postfix.OwnDomains(context.Background(), dir)
		switch {
		case errors.Is(err, postfix.ErrNotInstalled) && domFile != "":
			fmt.Fprintf(stderr, "mxdetour-milter keygen -all: %v: only the domains of %s\n", err, domFile)
		case err != nil:
			return nil, fmt.Errorf("%w (-postfix-config - asks Postfix nothing)", err)
		}
		for _, s := range skipped {
			fmt.Fprintf(stderr, "mxdetour-milter keygen -all: domains not read: %v\n", s)
		}
		names = append(names, ds...)
		if err == nil {
			names = append(names, originDomains(dir)...)
		}
	}
	if domFile != "" {
		f, err := os.Open(domFile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			l, _, _ := strings.Cut(sc.Text(), "#")
			names = append(names, strings.Fields(l)...)
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", domFile, err)
		}
	}
	if len(names) == 0 {
		return nil, errors.New("no domains: Postfix names none, and no -domains FILE")
	}
	return names, nil
}

// originDomains is Postfix's myorigin (the domain of mail posted
// locally; a file name on Debian, /etc/mailname) and mydomain.
func originDomains(dir string) []string {
	values, err := postfix.Params(context.Background(), dir, true, "myorigin", "mydomain")
	if err != nil {
		return nil
	}
	var names []string
	for _, v := range strings.Fields(strings.Join(values, " ")) {
		if strings.HasPrefix(v, "/") {
			data, err := os.ReadFile(v)
			if err != nil {
				continue
			}
			v, _, _ = strings.Cut(strings.TrimSpace(string(data)), "\n")
		}
		names = append(names, v)
	}
	return names
}

// signingDomains normalises names, each once and sorted, without those
// that are no one's to sign for: reserved names (RFC 2606, RFC 6761) and
// localhost.* (Postfix's default mydestination holds localhost.$mydomain).
func signingDomains(names []string) (doms, skipped []string) {
	for _, n := range names {
		d, err := domain.Normalize(n)
		switch {
		case err != nil || domain.IsLiteral(d):
			skipped = append(skipped, fmt.Sprintf("%q: not a domain name", n))
		case domain.Reserved(d, nil) || strings.HasPrefix(d, "localhost."):
			skipped = append(skipped, d+": a reserved or local name")
		case !strings.Contains(d, "."):
			skipped = append(skipped, d+": a name of one label")
		default:
			doms = append(doms, d)
		}
	}
	slices.Sort(doms)
	return slices.Compact(doms), slices.Compact(skipped)
}

// keyed names the selectors of d's keys in rows (rows and key_dir), or
// of the parent whose rows sign for subdomains; "" when d has none.
func keyed(rows []dkim.KeyRow, d string) string {
	var sels []string
	for _, r := range rows {
		rd, err := domain.Normalize(r.Domain)
		if err == nil && (rd == d || (r.Subdomains && domain.IsSubdomain(d, rd))) {
			sels = append(sels, r.Selector+" of "+rd)
		}
	}
	return strings.Join(sels, ", ")
}
