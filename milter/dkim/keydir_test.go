package dkim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/google/go-cmp/cmp"

	"github.com/mxdetour/mxdetour/internal/config"
)

func TestTemplate(t *testing.T) {
	for _, c := range []struct {
		tpl, name, d, s string
		ok              bool
	}{
		{"{domain}.{selector}.key", "example.org.rsa2026.key", "example.org", "rsa2026", true},
		{"{domain}.{selector}.key", "a.b.c.zz.ed1.key", "a.b.c.zz", "ed1", true},
		{"{domain}.{selector}.key", "example.org.key", "example", "org", true},
		{"{domain}.{selector}.key", "example.org.rsa2026.key~", "", "", false},
		{"{domain}.{selector}.key", "example.org.rsa2026.txt", "", "", false},
		{"{selector}._domainkey.{domain}.pem", "s1._domainkey.example.org.pem", "example.org", "s1", true},
		{"{domain}_{selector}.private", "example.org_mail.private", "example.org", "mail", true},
		{"{domain}.{selector}", "x.zz.s1", "x.zz", "s1", true},
	} {
		tp, err := ParseTemplate(c.tpl)
		if err != nil {
			t.Fatal(err)
		}
		d, s, ok := tp.Match(c.name)
		if d != c.d || s != c.s || ok != c.ok {
			t.Errorf("%s ~ %s: (%q, %q, %v), want (%q, %q, %v)", c.tpl, c.name, d, s, ok, c.d, c.s, c.ok)
		}
		if ok && tp.Name(d, s) != c.name {
			t.Errorf("%s: Name(%q, %q) = %q, want %q", c.tpl, d, s, tp.Name(d, s), c.name)
		}
	}
	for _, bad := range []string{"{domain}.key", "{selector}.key", "keys/{domain}.{selector}.key", "{domain}.{domain}.{selector}"} {
		if _, err := ParseTemplate(bad); err == nil {
			t.Errorf("ParseTemplate(%q) accepted", bad)
		}
	}
}

// keyDir writes n Ed25519 keys (selector ed1) and, for the first nRSA
// domains, RSA keys (selector rsa1) into a new directory, named as
// keygen names them, with the code's own key generation. It returns the
// directory and every record by name.
func keyDir(t testing.TB, n, nRSA int) (string, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	txt := map[string]string{}
	var ks []NewKey
	for i := range n {
		d := fmt.Sprintf("customer%03d.zz", i)
		ks = append(ks, NewKey{Domain: d, Selector: "ed1", Algorithm: "ed25519"})
		if i < nRSA {
			ks = append(ks, NewKey{Domain: d, Selector: "rsa1", Algorithm: "rsa", Bits: 2048})
		}
	}
	if err := GenerateKeys(ks); err != nil {
		t.Fatal(err)
	}
	for _, k := range ks {
		writeKey(t, dir, k, txt)
	}
	return dir, txt
}

func writeKey(t testing.TB, dir string, k NewKey, txt map[string]string) {
	t.Helper()
	if k.Signer == nil {
		var err error
		if k.Signer, err = GenerateKey(k.Algorithm, k.Bits); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteKeyFile(filepath.Join(dir, k.Domain+"."+k.Selector+".key"), k.Signer); err != nil {
		t.Fatal(err)
	}
	txt[k.Selector+"._domainkey."+k.Domain] = TXTRecord(k.Signer.Public())
}

func dirConfig(dir string) TableOptions {
	return TableOptions{KeyDir: dir, KeyFileTemplate: config.Default().Milter.DKIM.KeyFileTemplate}
}

// signedFrom signs a message from d with the table's keys for d and
// returns how each signature verifies against txt.
func signedFrom(t *testing.T, tbl *Table, d string, txt map[string]string) []*dkim.Verification {
	t.Helper()
	keys := tbl.For(d)
	if len(keys) == 0 {
		t.Fatalf("no key for %s", d)
	}
	msg := crlf("From: Customer <info@" + d + ">\nTo: bob@example.net\nSubject: hello\nDate: Mon, 24 Nov 2026 10:00:00 +0000\n\nHello\n")
	sigs, err := Sign(strings.NewReader(msg), keys, defaultOptions(), keys[0].Domain)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, s := range sigs {
		b.WriteString("DKIM-Signature:" + s + "\r\n")
	}
	return verifyGo(t, []byte(b.String()+msg), txt)
}

func allVerify(t *testing.T, vs []*dkim.Verification, d string, n int) {
	t.Helper()
	if len(vs) != n {
		t.Errorf("%s: %d signatures, want %d", d, len(vs), n)
	}
	for _, v := range vs {
		if v.Err != nil || v.Domain != d {
			t.Errorf("%s: signature d=%s: %v", d, v.Domain, v.Err)
		}
	}
}

// TestKeyDir300: a hosting provider's 300 domains in key_dir all load
// and sign (dual signing where a domain has two keys); a 301st file and
// a reload sign its domain; a bad file is reported as a row is and the
// others still sign.
func TestKeyDir300(t *testing.T) {
	dir, txt := keyDir(t, 300, 5)
	c := dirConfig(dir)
	start := time.Now()
	tbl, warns, err := Load(c)
	t.Logf("300 domains, 305 keys: loaded in %v", time.Since(start))
	if err != nil || len(warns) > 0 {
		t.Fatalf("Load: %v %v", err, warns)
	}
	if tbl.Len() != 305 {
		t.Fatalf("%d keys, want 305", tbl.Len())
	}
	for _, s := range tbl.Status() {
		if s.State != Loaded || !s.FromDir {
			t.Errorf("%+v", s)
		}
	}
	for i := 0; i < 300; i += 37 {
		d := fmt.Sprintf("customer%03d.zz", i)
		n := 1
		if i < 5 {
			n = 2
		}
		allVerify(t, signedFrom(t, tbl, d, txt), d, n)
	}
	allVerify(t, signedFrom(t, tbl, "customer002.zz", txt), "customer002.zz", 2) // RSA and Ed25519

	// A new customer: one more file, then a reload.
	writeKey(t, dir, NewKey{Domain: "newcustomer.zz", Selector: "ed1", Algorithm: "ed25519"}, txt)
	// And a broken one, beside it.
	os.WriteFile(filepath.Join(dir, "broken.zz.ed1.key"), []byte("v=DKIM1; k=ed25519; p=AAAA"), 0o600)
	start = time.Now()
	next, _, err := Load(c)
	kept := next.KeepFrom(tbl)
	t.Logf("reload with 307 files: %v", time.Since(start))
	var ke *KeyError
	if !errors.As(err, &ke) || ke.Domain != "broken.zz" || !strings.Contains(err.Error(), "holds a DNS TXT record") {
		t.Errorf("err = %v, want the broken file's", err)
	}
	if len(kept) != 0 {
		t.Errorf("kept %v", kept)
	}
	if next.Len() != 306 {
		t.Errorf("%d keys after reload, want 306", next.Len())
	}
	allVerify(t, signedFrom(t, next, "newcustomer.zz", txt), "newcustomer.zz", 1)
	allVerify(t, signedFrom(t, next, "customer299.zz", txt), "customer299.zz", 1)
	var failed []string
	for _, s := range next.Status() {
		if s.State != Loaded {
			failed = append(failed, s.Domain+"/"+s.Selector+" "+string(s.State))
		}
	}
	if d := cmp.Diff([]string{"broken.zz/ed1 failed"}, failed); d != "" {
		t.Errorf("status (-want +got):\n%s", d)
	}
}

// A key file overwritten by mistake keeps signing with the key of before
// (as a row's does), and a key_dir that cannot be read at reload keeps
// all its keys; a file removed stops signing.
func TestKeyDirReloadKeepsWhatWorks(t *testing.T) {
	dir, txt := keyDir(t, 3, 0)
	c := dirConfig(dir)
	prev, _, err := Load(c)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "customer000.zz.ed1.key"), nil, 0o600) // truncated
	os.Remove(filepath.Join(dir, "customer002.zz.ed1.key"))
	next, _, err := Load(c)
	if err == nil {
		t.Fatal("no error for an empty key file")
	}
	kept := next.KeepFrom(prev)
	if len(kept) != 1 || kept[0].Domain != "customer000.zz" || kept[0].State != Kept {
		t.Errorf("kept %+v", kept)
	}
	allVerify(t, signedFrom(t, next, "customer000.zz", txt), "customer000.zz", 1)
	if ks := next.For("customer002.zz"); ks != nil {
		t.Errorf("removed key still signs: %v", ks)
	}

	c.KeyDir = filepath.Join(dir, "gone")
	gone, _, err := Load(c)
	if err == nil || !strings.Contains(err.Error(), "key_dir") {
		t.Fatalf("err = %v, want key_dir's", err)
	}
	if gone.Len() != 0 {
		t.Errorf("%d keys without key_dir", gone.Len())
	}
	if st := gone.Status(); len(st) != 1 || st[0].State != Failed || st[0].File != c.KeyDir || !st[0].FromDir {
		t.Errorf("status %+v, want key_dir failed", st)
	}
	kept = gone.KeepFrom(next)
	if len(kept) != 2 || gone.Len() != 2 {
		t.Errorf("kept %+v (%d keys), want the 2 keys of before", kept, gone.Len())
	}
	allVerify(t, signedFrom(t, gone, "customer001.zz", txt), "customer001.zz", 1)
}

// Rows win over files of the same domain and selector; other files of
// that domain sign beside the rows.
func TestKeyDirRowsWin(t *testing.T) {
	dir, txt := keyDir(t, 2, 0)
	rowDir := t.TempDir()
	rtxt := map[string]string{}
	writeKey(t, rowDir, NewKey{Domain: "customer000.zz", Selector: "ed1", Algorithm: "ed25519"}, rtxt)
	writeKey(t, dir, NewKey{Domain: "customer000.zz", Selector: "ed2", Algorithm: "ed25519"}, txt)
	c := dirConfig(dir)
	c.Keys = []KeyRow{{Domain: "customer000.zz", Selector: "ed1", KeyFile: filepath.Join(rowDir, "customer000.zz.ed1.key")}}
	tbl, _, err := Load(c)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range tbl.For("customer000.zz") {
		got = append(got, fmt.Sprintf("%s %v %v", k.Selector, filepath.Dir(k.File) == rowDir, k.FromDir))
	}
	if d := cmp.Diff([]string{"ed1 true false", "ed2 false true"}, got); d != "" {
		t.Errorf("keys (-want +got):\n%s", d)
	}
	txt["ed1._domainkey.customer000.zz"] = rtxt["ed1._domainkey.customer000.zz"]
	allVerify(t, signedFrom(t, tbl, "customer000.zz", txt), "customer000.zz", 2)
}

// Key files in key_dir are held to the rows' mode rule; other files
// and hidden ones are no keys.
func TestKeyDirFiles(t *testing.T) {
	dir, _ := keyDir(t, 2, 0)
	os.Chmod(filepath.Join(dir, "customer001.zz.ed1.key"), 0o644)
	os.WriteFile(filepath.Join(dir, "README"), []byte("keys"), 0o644)
	os.WriteFile(filepath.Join(dir, ".customer003.zz.ed1.key"), nil, 0o600)
	os.WriteFile(filepath.Join(dir, "customer000.zz.ed1.txt"), nil, 0o644)
	os.Mkdir(filepath.Join(dir, "old.zz.s1.key"), 0o700)
	tbl, _, err := Load(dirConfig(dir))
	if err == nil || !strings.Contains(err.Error(), "mode 0644") {
		t.Errorf("err = %v, want the mode of customer001's file", err)
	}
	if len(tbl.Status()) != 2 || tbl.Len() != 1 {
		t.Errorf("status %+v", tbl.Status())
	}
	c := dirConfig(dir)
	c.AllowGroupReadable = true
	os.Chmod(filepath.Join(dir, "customer001.zz.ed1.key"), 0o640)
	if _, _, err := Load(c); err != nil {
		t.Errorf("allow_group_readable_keys: %v", err)
	}
}

// default_domain signs the mail of domains without keys, with d= itself;
// a domain with keys, or under a subdomains row, keeps its own.
func TestDefaultDomain(t *testing.T) {
	dir, txt := keyDir(t, 2, 0)
	c := dirConfig(dir)
	tbl, _, _ := Load(c)
	if ks := tbl.For("nokeys.zz"); ks != nil {
		t.Fatalf("without default_domain: %v", ks)
	}
	c.DefaultDomain = "customer001.zz"
	tbl, _, _ = Load(c)
	allVerify(t, signedFrom(t, tbl, "nokeys.zz", txt), "customer001.zz", 1)
	if ks := tbl.For("customer000.zz"); len(ks) != 1 || ks[0].Domain != "customer000.zz" {
		t.Errorf("own keys replaced: %v", ks)
	}
}

// BenchmarkLoadKeyDir300 is start and reload with 300 domains: 300
// Ed25519 keys and 300 RSA-2048 keys.
func BenchmarkLoadKeyDir300(b *testing.B) {
	dir, _ := keyDir(b, 300, 300)
	c := dirConfig(dir)
	for b.Loop() {
		if _, _, err := Load(c); err != nil {
			b.Fatal(err)
		}
	}
}
