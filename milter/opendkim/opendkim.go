// Package opendkim reads an OpenDKIM configuration, opendkim.conf(5) with
// the data sets of opendkim(8) ("DATA SETS": file:, refile:, csl: and
// plain lists) behind its KeyTable, SigningTable, InternalHosts and
// ExternalIgnoreList, and translates it into mxdetour-milter's
// configuration: the same key files and selectors, so DNS stays as it
// is. What has no equivalent is named with its file and line.
package opendkim

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Note is a remark on one line of the OpenDKIM configuration.
type Note struct {
	Where string // FILE:LINE
	Text  string
}

func (n Note) String() string { return n.Where + ": " + n.Text }

// Result is the translated configuration: each field left empty keeps
// mxdetour's default.
type Result struct {
	Source             string
	Listen, SocketMode string
	Trusted            []netip.Prefix // nil: InternalHosts not set (OpenDKIM's default, 127.0.0.1, is within ours)
	Canonicalization   string
	Headers, Oversign  []string
	Nameservers        []string
	AllowGroupReadable bool
	Keys               []Key
	Notes              []Note // mapped, with a remark
	Unmapped           []Note // options and entries with no equivalent
}

// Key is one key of the KeyTable (or of Domain/Selector/KeyFile), as a
// [[milter.dkim.keys]] row writes it.
type Key struct {
	Domain, Selector, KeyFile string
	Subdomains                bool
}

// line is one "Keyword value" line of opendkim.conf.
type line struct {
	key, value, where string
}

// Import reads the OpenDKIM configuration at path and the tables it names.
func Import(path string) (*Result, error) {
	lines, err := readConf(path)
	if err != nil {
		return nil, err
	}
	r := &Result{Source: path}
	opts := map[string]line{}
	for _, l := range lines {
		opts[strings.ToLower(l.key)] = l
	}
	multiple := false
	if l, ok := opts["multiplesignatures"]; ok {
		multiple = yes(l.value)
	}
	for _, l := range lines {
		if err := r.option(l, opts, multiple); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", l.where, l.key, err)
		}
	}
	if _, ok := opts["canonicalization"]; !ok {
		r.Canonicalization = "simple/simple"
		r.Notes = append(r.Notes, Note{path, "no Canonicalization: OpenDKIM's default, simple/simple, is kept (relaxed/relaxed survives more forwarders)"})
	}
	if len(r.Keys) == 0 {
		return r, errors.New(path + ": no signing key found (neither KeyTable with SigningTable nor Domain, Selector and KeyFile)")
	}
	return r, nil
}

// option translates one line of opendkim.conf.
func (r *Result) option(l line, opts map[string]line, multiple bool) error {
	unmapped := func(why string) { r.Unmapped = append(r.Unmapped, Note{l.where, l.key + " " + l.value + ": " + why}) }
	switch strings.ToLower(l.key) {
	case "keytable":
		sl, ok := opts["signingtable"]
		if !ok {
			unmapped("no SigningTable says which mail each key signs: add the [[milter.dkim.keys]] rows by hand")
			return nil
		}
		return r.tables(l, sl, multiple, yes(opts["subdomains"].value))
	case "signingtable":
		if _, ok := opts["keytable"]; !ok {
			unmapped("a SigningTable without KeyTable names no keys")
		}
	case "domain", "selector", "keyfile":
		if _, ok := opts["keytable"]; ok {
			return nil // ignored by OpenDKIM too when a KeyTable is set
		}
		if strings.ToLower(l.key) == "domain" {
			return r.singleKey(l, opts)
		}
	case "subdomains", "multiplesignatures":
		// applied to the key rows
	case "internalhosts":
		return r.internalHosts(l)
	case "externalignorelist":
		unmapped("only quiets OpenDKIM's \"external host tried to send mail as\" log lines; mxdetour-milter logs none such: nothing to carry over")
	case "canonicalization":
		c := strings.ToLower(l.value)
		if !strings.Contains(c, "/") {
			c += "/simple" // the body's default (opendkim.conf(5))
		}
		r.Canonicalization = c
	case "oversignheaders":
		r.Oversign = splitList(l.value)
	case "signheaders":
		r.Headers = splitList(l.value)
	case "socket":
		return r.socket(l)
	case "umask":
		u, err := strconv.ParseUint(l.value, 8, 32)
		if err != nil {
			return fmt.Errorf("%q is not an octal mask", l.value)
		}
		r.SocketMode = fmt.Sprintf("%04o", 0o666&^u)
		r.Notes = append(r.Notes, Note{l.where, "UMask " + l.value + ": socket_mode " + r.SocketMode})
	case "nameservers":
		r.Nameservers = splitList(l.value)
	case "requiresafekeys":
		if !yes(l.value) {
			r.AllowGroupReadable = true
			r.Notes = append(r.Notes, Note{l.where, "RequireSafeKeys off: allow_group_readable_keys (world-readable keys are still refused)"})
		}
	case "mode":
		if strings.Contains(l.value, "v") {
			unmapped("mxdetour-milter signs only; it verifies nothing (keep a verifier for inbound mail if you need one)")
		}
	case "userid":
		unmapped("the systemd unit runs the milter as mxdetour: give it the key files (chown mxdetour FILE, mode 0600)")
	case "syslog", "syslogsuccess", "logwhy", "syslogfacility":
		unmapped("the milter logs to the journal; [log] level sets how much")
	case "pidfile", "autorestart", "background", "autorestartrate":
		unmapped("systemd runs and restarts the milter")
	case "trustanchorfile":
		unmapped("DNSSEC validation is the resolver's, in [dns] servers")
	default:
		unmapped("no equivalent in mxdetour-milter")
	}
	return nil
}

// readConf reads "Keyword value" lines; # starts a comment.
func readConf(path string) ([]line, error) {
	var out []line
	err := eachLine(path, func(n int, text string) error {
		k, v, _ := strings.Cut(strings.Join(strings.Fields(text), " "), " ")
		out = append(out, line{key: k, value: v, where: fmt.Sprintf("%s:%d", path, n)})
		return nil
	})
	return out, err
}

// eachLine calls f with the number and text of each line of path that is
// not blank once its comment is removed.
func eachLine(path string, f func(n int, text string) error) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for n := 1; sc.Scan(); n++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		if strings.TrimSpace(text) == "" {
			continue
		}
		if err := f(n, strings.TrimSpace(text)); err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
	}
	return sc.Err()
}

// entry is one element of a data set, with where it was written.
type entry struct {
	key, value, where string
}

// dataset reads a data set: file: and refile: files ("KEY VALUE" per
// line), plain paths (file:), csl: and plain comma lists.
func dataset(l line) (entries []entry, regex bool, err error) {
	v := l.value
	switch {
	case strings.HasPrefix(v, "refile:"):
		regex = true
		v = strings.TrimPrefix(v, "refile:")
	case strings.HasPrefix(v, "file:"):
		v = strings.TrimPrefix(v, "file:")
	case strings.HasPrefix(v, "csl:"), !strings.HasPrefix(v, "/") && !strings.HasPrefix(v, "."):
		if i := strings.Index(v, ":"); i > 0 && !strings.HasPrefix(v, "csl:") && isWord(v[:i]) {
			return nil, false, fmt.Errorf("data set type %s: is not supported: export it to a flat file", v[:i])
		}
		for _, s := range splitList(strings.TrimPrefix(v, "csl:")) {
			entries = append(entries, entry{key: s, where: l.where})
		}
		return entries, false, nil
	}
	err = eachLine(v, func(n int, text string) error {
		k, val := text, ""
		if i := strings.IndexAny(text, " \t"); i >= 0 {
			k, val = text[:i], strings.TrimSpace(text[i:])
		}
		entries = append(entries, entry{key: k, value: val, where: fmt.Sprintf("%s:%d", v, n)})
		return nil
	})
	return entries, regex, err
}

func isWord(s string) bool {
	for _, c := range s {
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

func splitList(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

func yes(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "yes", "true", "1", "on":
		return true
	}
	return false
}

// keyRef is a KeyTable entry: domain (or "%"), selector, key file.
type keyRef struct {
	domain, selector, file, where string
}

// tables joins the SigningTable to the KeyTable.
func (r *Result) tables(kl, sl line, multiple, subdomains bool) error {
	kents, _, err := dataset(kl)
	if err != nil {
		return err
	}
	keys := map[string]keyRef{}
	for _, e := range kents {
		parts := strings.SplitN(e.value, ":", 3)
		if len(parts) != 3 {
			r.Unmapped = append(r.Unmapped, Note{e.where, fmt.Sprintf("key %s: %q is not DOMAIN:SELECTOR:KEYFILE", e.key, e.value)})
			continue
		}
		k := keyRef{domain: strings.ToLower(parts[0]), selector: parts[1], file: parts[2], where: e.where}
		if !strings.HasPrefix(k.file, "/") && !strings.HasPrefix(k.file, "./") && !strings.HasPrefix(k.file, "../") {
			r.Unmapped = append(r.Unmapped, Note{e.where, "key " + e.key + ": the private key is written inline: put it in a file (mode 0600) and name that"})
			continue
		}
		if !filepath.IsAbs(k.file) {
			k.file = filepath.Join(filepath.Dir(strings.TrimPrefix(strings.TrimPrefix(kl.value, "file:"), "refile:")), k.file)
			r.Notes = append(r.Notes, Note{e.where, "key " + e.key + ": the relative path is taken from the KeyTable's directory: " + k.file + "; check it"})
		}
		keys[e.key] = k
	}
	sents, regex, err := dataset(sl)
	if err != nil {
		return err
	}
	signed := map[string]bool{} // domains that have their first key (MultipleSignatures off)
	for _, e := range sents {
		name, _, _ := strings.Cut(e.value, ":")
		name = strings.Fields(name + " ")[0]
		k, ok := keys[name]
		if !ok {
			r.Unmapped = append(r.Unmapped, Note{e.where, fmt.Sprintf("%s names key %q, which the KeyTable lacks", e.key, name)})
			continue
		}
		dom, sub, why := fromPattern(strings.ToLower(e.key), regex)
		if why != "" {
			r.Unmapped = append(r.Unmapped, Note{e.where, e.key + ": " + why})
			continue
		}
		d := k.domain
		switch {
		case d == "%":
			d = dom
		case d == dom:
		case strings.HasSuffix(dom, "."+d):
			sub = true
			r.Notes = append(r.Notes, Note{e.where, fmt.Sprintf("%s signed d=%s: every subdomain of %s is signed now", e.key, d, d)})
		default:
			r.Unmapped = append(r.Unmapped, Note{e.where, fmt.Sprintf("%s signed with d=%s: mxdetour-milter signs with the From domain only; make a key for %s", e.key, d, dom)})
			continue
		}
		if r.hasKey(d, k.selector) {
			r.addKey(Key{Domain: d, Selector: k.selector, KeyFile: k.file, Subdomains: sub || subdomains})
			continue
		}
		if !multiple && signed[d] {
			r.Unmapped = append(r.Unmapped, Note{e.where, e.key + ": MultipleSignatures is off, so OpenDKIM signs " + d + " with its first match only"})
			continue
		}
		signed[d] = true
		r.addKey(Key{Domain: d, Selector: k.selector, KeyFile: k.file, Subdomains: sub || subdomains})
	}
	return nil
}

// fromPattern reads a SigningTable key: a refile wildcard pattern or a
// file key (opendkim.conf(5) SigningTable), as a domain and whether its
// subdomains are meant; why says what cannot be carried over.
func fromPattern(p string, regex bool) (domain string, subdomains bool, why string) {
	if regex {
		switch {
		case p == "*" || p == "*@*":
			return "", false, "signs every sender's mail: list the domains, one row each"
		case strings.HasPrefix(p, "*@*."):
			return p[4:], true, plainDomain(p[4:])
		case strings.HasPrefix(p, "*@"):
			return p[2:], false, plainDomain(p[2:])
		case strings.HasPrefix(p, "*."):
			return p[2:], true, plainDomain(p[2:])
		}
		if strings.Contains(p, "@") {
			return "", false, "a key for one sender: mxdetour-milter signs per From domain"
		}
		return "", false, "a pattern mxdetour-milter cannot express"
	}
	switch {
	case p == "*":
		return "", false, "signs every sender's mail: list the domains, one row each"
	case strings.Contains(p, "@"):
		return "", false, "a key for one sender: mxdetour-milter signs per From domain"
	case strings.HasPrefix(p, "."):
		return p[1:], true, plainDomain(p[1:])
	}
	return p, false, plainDomain(p)
}

func plainDomain(d string) string {
	if d == "" || strings.ContainsAny(d, "*@ ") {
		return "a pattern mxdetour-milter cannot express"
	}
	return ""
}

func (r *Result) hasKey(domain, selector string) bool {
	for _, o := range r.Keys {
		if o.Domain == domain && o.Selector == selector {
			return true
		}
	}
	return false
}

func (r *Result) addKey(k Key) {
	for i, o := range r.Keys {
		if o.Domain == k.Domain && o.Selector == k.Selector {
			r.Keys[i].Subdomains = o.Subdomains || k.Subdomains
			return
		}
	}
	r.Keys = append(r.Keys, k)
}

// singleKey maps Domain, Selector and KeyFile without a KeyTable.
func (r *Result) singleKey(dl line, opts map[string]line) error {
	sel, kf := opts["selector"], opts["keyfile"]
	if sel.value == "" || kf.value == "" {
		r.Unmapped = append(r.Unmapped, Note{dl.where, "Domain without Selector and KeyFile signs nothing"})
		return nil
	}
	ents, _, err := dataset(dl)
	if err != nil {
		return err
	}
	for _, e := range ents {
		r.addKey(Key{Domain: strings.ToLower(e.key), Selector: sel.value, KeyFile: kf.value, Subdomains: yes(opts["subdomains"].value)})
	}
	return nil
}

// internalHosts maps InternalHosts to trusted_networks.
func (r *Result) internalHosts(l line) error {
	ents, _, err := dataset(l)
	if err != nil {
		return err
	}
	r.Trusted = []netip.Prefix{}
	defer func() { // localhost and 127.0.0.1 are often both listed
		uniq := []netip.Prefix{}
		for _, p := range r.Trusted {
			if !slices.Contains(uniq, p) {
				uniq = append(uniq, p)
			}
		}
		r.Trusted = uniq
	}()
	for _, e := range ents {
		h := e.key
		switch {
		case strings.HasPrefix(h, "!"):
			r.Unmapped = append(r.Unmapped, Note{e.where, h + ": exclusions have no equivalent: list the networks to trust without it"})
		case strings.EqualFold(h, "localhost"):
			r.Trusted = append(r.Trusted, netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128"))
			r.Notes = append(r.Notes, Note{e.where, "localhost: 127.0.0.1 and ::1"})
		default:
			if p, err := netip.ParsePrefix(h); err == nil {
				r.Trusted = append(r.Trusted, p.Masked())
			} else if a, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
				r.Trusted = append(r.Trusted, netip.PrefixFrom(a, a.BitLen()))
			} else {
				r.Unmapped = append(r.Unmapped, Note{e.where, h + ": trusted_networks takes addresses and networks, not host names: add the host's addresses"})
			}
		}
	}
	return nil
}

// socket maps Socket to milter.listen.
func (r *Result) socket(l line) error {
	v := l.value
	switch {
	case strings.HasPrefix(v, "local:"), strings.HasPrefix(v, "unix:"):
		_, p, _ := strings.Cut(v, ":")
		r.Listen = "unix:" + p
		r.Notes = append(r.Notes, Note{l.where, "a unix socket: the milter's user must be able to create it there, and Postfix's smtpd (chrooted on Debian) to reach it; an inet socket such as 127.0.0.1:10042 avoids both"})
	case strings.HasPrefix(v, "inet:"), strings.HasPrefix(v, "inet6:"):
		_, rest, _ := strings.Cut(v, ":")
		port, host, _ := strings.Cut(rest, "@")
		switch host {
		case "", "*":
			host = "0.0.0.0"
			if strings.HasPrefix(v, "inet6:") {
				host = "::"
			}
			r.Notes = append(r.Notes, Note{l.where, "listens on every address, as OpenDKIM did; 127.0.0.1 is enough for a local Postfix"})
		case "localhost":
			host = "127.0.0.1"
		}
		host = strings.Trim(host, "[]")
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		r.Listen = host + ":" + port
	default:
		return fmt.Errorf("%q is neither local:PATH nor inet:PORT@HOST", v)
	}
	return nil
}
