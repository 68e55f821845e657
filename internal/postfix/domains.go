// Package postfix reads what mxdetour needs to know from a Postfix
// instance through Postfix's own commands (postconf(1), postmap(1)), so
// that it sees the configuration exactly as Postfix does: parameters
// expanded, defaults applied, the instance chosen by -c.
package postfix

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// OwnDomainParams are the parameters naming the domains Postfix delivers
// itself or relays to a transport of its own (ADDRESS_CLASS_README):
// local, virtual alias, virtual mailbox and relay domains. Mail to them
// must never be routed by mxdetour, nor wait for DNS.
var OwnDomainParams = []string{"mydestination", "virtual_alias_domains", "virtual_mailbox_domains", "relay_domains"}

// Command finds one of Postfix's commands in PATH, else in /usr/sbin
// (where Debian and Fedora put them; a service's PATH may lack it).
func Command(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	p := "/usr/sbin/" + name
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s is not installed (not in PATH nor /usr/sbin)", name)
	}
	return p, nil
}

// ErrNotInstalled is returned when postconf cannot be found.
var ErrNotInstalled = errors.New("postfix is not installed")

// OwnDomains returns the domains of OwnDomainParams in the instance whose
// configuration directory is dir ("" for Postfix's default), lower case,
// each once. A list element may be a name, a file of names (/path) or a
// lookup table (type:name): tables that postmap can list (hash, lmdb,
// cdb, texthash ...) are read; the others (mysql, ldap ...) cannot be,
// and are returned in skipped with the reason, as are files that do not
// open. Only when postconf itself fails is err set.
func OwnDomains(ctx context.Context, dir string) (domains []string, skipped []error, err error) {
	values, err := Params(ctx, dir, true, OwnDomainParams...)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second) // for postmap -s
	defer cancel()
	add := func(d string) {
		d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
		if d != "" && !strings.ContainsAny(d, " \t$") && !slices.Contains(domains, d) {
			domains = append(domains, d)
		}
	}
	for _, line := range values {
		for _, elem := range splitList(line) {
			switch {
			case strings.HasPrefix(elem, "/"):
				data, err := os.ReadFile(elem)
				if err != nil {
					skipped = append(skipped, err)
					continue
				}
				for _, l := range strings.Split(string(data), "\n") {
					if l, _, _ = strings.Cut(l, "#"); strings.TrimSpace(l) != "" {
						for _, d := range splitList(l) {
							add(d)
						}
					}
				}
			case strings.Contains(elem, ":"):
				keys, err := tableKeys(ctx, dir, elem)
				if err != nil {
					skipped = append(skipped, fmt.Errorf("%s: %w", elem, err))
					continue
				}
				for _, k := range keys {
					if !strings.Contains(k, "@") { // an address, not a domain
						add(k)
					}
				}
			default:
				add(elem)
			}
		}
	}
	return domains, skipped, nil
}

// splitList splits a Postfix list value: names separated by commas
// and/or white space.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

// tableKeys lists a table's keys with postmap -s (every key, with its
// value); tables that cannot be listed fail.
func tableKeys(ctx context.Context, dir, table string) ([]string, error) {
	postmap, err := Command("postmap")
	if err != nil {
		return nil, err
	}
	args := []string{"-s", table}
	if dir != "" {
		args = append([]string{"-c", dir}, args...)
	}
	out, err := run(ctx, postmap, args...)
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, l := range strings.Split(string(out), "\n") {
		if k, _, _ := strings.Cut(strings.TrimSpace(l), "\t"); k != "" {
			keys = append(keys, strings.Fields(k)[0])
		}
	}
	return keys, nil
}

func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
