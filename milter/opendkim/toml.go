package opendkim

import (
	"fmt"
	"io"
	"os"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// WriteTOML writes the mxdetour.toml sections of r, with the remarks and
// every unmapped option as comments.
func (r *Result) WriteTOML(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p("# mxdetour.toml sections made by `mxdetour-milter import-opendkim %s`.", r.Source)
	p("# The key files and selectors are OpenDKIM's own: the published records stay as they are.")
	if len(r.Nameservers) > 0 {
		p("\n[dns]\nservers = %s", list(r.Nameservers))
	}
	p("\n[milter]")
	if r.Listen != "" {
		p("listen = %q", r.Listen)
	}
	if r.SocketMode != "" {
		p("socket_mode = %q", r.SocketMode)
	}
	if r.Trusted != nil {
		s := make([]string, len(r.Trusted))
		for i, t := range r.Trusted {
			s[i] = t.String()
		}
		p("trusted_networks = %s   # from InternalHosts", list(s))
	}
	p("\n[milter.dkim]")
	if r.Canonicalization != "" {
		p("canonicalization = %q", r.Canonicalization)
	}
	if r.Headers != nil {
		p("headers = %s", list(r.Headers))
	}
	if r.Oversign != nil {
		p("oversign_headers = %s", list(r.Oversign))
	}
	if r.AllowGroupReadable {
		p("allow_group_readable_keys = true")
	}
	for _, k := range r.Keys {
		p("\n[[milter.dkim.keys]]\ndomain = %q\nselector = %q\nkey_file = %q", k.Domain, k.Selector, k.KeyFile)
		if k.Subdomains {
			p("subdomains = true")
		}
	}
	if chown := r.chownFiles(); len(chown) > 0 {
		p("\n# The milter runs as mxdetour and must read the keys; OpenDKIM's belong to its own user:")
		p("#   chown mxdetour %s", strings.Join(chown, " "))
	}
	if len(r.Notes) > 0 {
		p("\n# Carried over with a remark:")
		for _, n := range r.Notes {
			p("#   %s", n)
		}
	}
	if len(r.Unmapped) > 0 {
		p("\n# Not carried over (no equivalent in mxdetour-milter):")
		for _, n := range r.Unmapped {
			p("#   %s", n)
		}
	}
}

func list(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = strconv.Quote(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// chownFiles lists the key files the mxdetour user (when it exists) does
// not own; all of them when it does not exist yet.
func (r *Result) chownFiles() []string {
	u, uerr := user.Lookup("mxdetour")
	seen := map[string]bool{}
	var out []string
	for _, k := range r.Keys {
		if seen[k.KeyFile] {
			continue
		}
		seen[k.KeyFile] = true
		if uerr == nil {
			if fi, err := os.Stat(k.KeyFile); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok && strconv.Itoa(int(st.Uid)) == u.Uid {
					continue
				}
			}
		}
		out = append(out, k.KeyFile)
	}
	sort.Strings(out)
	return out
}
