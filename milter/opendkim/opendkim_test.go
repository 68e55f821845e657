package opendkim

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func write(t *testing.T, dir, name, text string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func notes(ns []Note) string {
	var s []string
	for _, n := range ns {
		s = append(s, n.String())
	}
	return strings.Join(s, "\n")
}

// A flat-file SigningTable (opendkim.conf(5): keys are address, domain,
// .domain, user@*, *), MultipleSignatures, a key path relative to the
// KeyTable.
func TestFileSigningTable(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "keytable", "rsa example.com:rsa:/etc/dkimkeys/rsa.private\ned example.com:ed:./keys/ed.private\norg %:s1:/etc/dkimkeys/org.private\n")
	write(t, dir, "signingtable", "example.com rsa\nexample.com ed\n.example.org org\nexample.org org\nalice@example.net rsa\n* rsa\nexample.edu missing\n")
	conf := write(t, dir, "opendkim.conf", fmt.Sprintf("KeyTable %s/keytable\nSigningTable file:%s/signingtable\nMultipleSignatures yes\nCanonicalization relaxed\nSocket inet6:8891@[::1]\nNameservers 127.0.0.1, ::1\nRequireSafeKeys no\nAutoRestart yes\n", dir, dir))
	r, err := Import(conf)
	if err != nil {
		t.Fatal(err)
	}
	want := []Key{
		{Domain: "example.com", Selector: "rsa", KeyFile: "/etc/dkimkeys/rsa.private"},
		{Domain: "example.com", Selector: "ed", KeyFile: filepath.Join(dir, "keys/ed.private")},
		{Domain: "example.org", Selector: "s1", KeyFile: "/etc/dkimkeys/org.private", Subdomains: true},
	}
	if diff := cmp.Diff(want, r.Keys); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
	if r.Listen != "[::1]:8891" || r.Canonicalization != "relaxed/simple" || !r.AllowGroupReadable || !cmp.Equal(r.Nameservers, []string{"127.0.0.1", "::1"}) {
		t.Errorf("listen %q canon %q allow %v ns %v", r.Listen, r.Canonicalization, r.AllowGroupReadable, r.Nameservers)
	}
	un := notes(r.Unmapped)
	for _, w := range []string{
		dir + "/signingtable:5: alice@example.net: a key for one sender",
		dir + "/signingtable:6: *: signs every sender's mail",
		dir + "/signingtable:7: example.edu names key \"missing\"",
		conf + ":8: AutoRestart yes: systemd runs and restarts the milter",
	} {
		if !strings.Contains(un, w) {
			t.Errorf("unmapped lacks %q:\n%s", w, un)
		}
	}
}

// Domain, Selector and KeyFile without tables, a unix socket, the
// default canonicalization, an inline key.
func TestSingleKey(t *testing.T) {
	dir := t.TempDir()
	conf := write(t, dir, "opendkim.conf", "Domain example.com, example.net\nSelector 2020\nKeyFile /etc/dkimkeys/example.private\nSubDomains yes\nSocket local:/run/opendkim/opendkim.sock\nInternalHosts 192.168.0.0/16, !192.168.5.0/24, 10.0.0.0/8\n")
	r, err := Import(conf)
	if err != nil {
		t.Fatal(err)
	}
	want := []Key{
		{Domain: "example.com", Selector: "2020", KeyFile: "/etc/dkimkeys/example.private", Subdomains: true},
		{Domain: "example.net", Selector: "2020", KeyFile: "/etc/dkimkeys/example.private", Subdomains: true},
	}
	if diff := cmp.Diff(want, r.Keys); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
	if r.Listen != "unix:/run/opendkim/opendkim.sock" || r.Canonicalization != "simple/simple" || len(r.Trusted) != 2 {
		t.Errorf("listen %q canon %q trusted %v", r.Listen, r.Canonicalization, r.Trusted)
	}
	if !strings.Contains(notes(r.Unmapped), conf+":6: !192.168.5.0/24: exclusions") {
		t.Errorf("exclusion not named:\n%s", notes(r.Unmapped))
	}

	write(t, dir, "kt", "k example.com:s:MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n")
	write(t, dir, "st", "*@example.com k\n")
	conf = write(t, dir, "inline.conf", "KeyTable "+dir+"/kt\nSigningTable refile:"+dir+"/st\n")
	if _, err := Import(conf); err == nil || !strings.Contains(err.Error(), "no signing key") {
		t.Errorf("only an inline key: %v", err)
	}
	conf = write(t, dir, "db.conf", "KeyTable db:/etc/opendkim/keytable.db\nSigningTable refile:"+dir+"/st\n")
	if _, err := Import(conf); err == nil || !strings.Contains(err.Error(), "db.conf:1: KeyTable: data set type db: is not supported") {
		t.Errorf("a db: table: %v", err)
	}
}
