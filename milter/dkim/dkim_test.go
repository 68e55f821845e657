package dkim

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mxdetour/mxdetour/internal/config"
)

var (
	keysOnce      sync.Once
	rsaKey, edKey crypto.Signer
)

func testKeys(t testing.TB) (*Key, *Key) {
	keysOnce.Do(func() {
		var err error
		if rsaKey, err = GenerateKey("rsa", 2048); err != nil {
			panic(err)
		}
		if edKey, err = GenerateKey("ed25519", 0); err != nil {
			panic(err)
		}
	})
	return &Key{Domain: "example.org", Selector: "rsa", Signer: rsaKey, Algorithm: "rsa"},
		&Key{Domain: "example.org", Selector: "ed", Signer: edKey, Algorithm: "ed25519"}
}

func txtMap(keys ...*Key) map[string]string {
	m := map[string]string{}
	for _, k := range keys {
		m[k.Selector+"._domainkey.example.org"] = TXTRecord(k.Signer.Public())
	}
	return m
}

func verifyGo(t *testing.T, msg []byte, txt map[string]string) []*dkim.Verification {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: func(d string) ([]string, error) {
		if v, ok := txt[strings.TrimSuffix(d, ".")]; ok {
			return []string{v}, nil
		}
		return nil, errors.New("no such record")
	}})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func verifyPython(t *testing.T, msg []byte, txt map[string]string) (string, bool) {
	t.Helper()
	if err := exec.Command("/usr/bin/python3", "-c", "import dkim").Run(); err != nil {
		t.Skip("Debian's python3-dkim is not installed (.ci/run installs it)")
	}
	f := filepath.Join(t.TempDir(), "msg.eml")
	os.WriteFile(f, msg, 0o600)
	args := []string{"testdata/verify.py", f}
	for n, v := range txt {
		args = append(args, n+"="+v)
	}
	out, err := exec.Command("/usr/bin/python3", args...).CombinedOutput()
	return string(out), err == nil
}

func signed(t *testing.T, msg string, keys []*Key, o Options) []byte {
	t.Helper()
	sigs, err := Sign(strings.NewReader(msg), keys, o, "example.org")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, s := range sigs {
		b.WriteString("DKIM-Signature:" + s + "\r\n")
	}
	return []byte(b.String() + msg)
}

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

var messages = map[string]string{
	"folded":     crlf("From: Alice <alice@example.org>\nTo: bob@example.net,\n carol@example.net\nSubject: a folded\n\tsubject line  \nDate: Mon, 24 Nov 2026 10:00:00 +0000\nMessage-ID: <1@example.org>\n\nHello  \n\nworld\n\n\n"),
	"long lines": crlf("From: alice@example.org\nSubject: long\n\n" + strings.Repeat("word ", 180) + "\n"),
	"8-bit":      crlf("From: alice@example.org\nSubject: =?utf-8?q?caf=C3=A9?=\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nCafé, naïve, 日本語.\n"),
	"empty body": crlf("From: alice@example.org\nSubject: empty\n\n"),
	"over 1 MB":  crlf("From: alice@example.org\nSubject: big\n\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n", 17000)),
}

func TestSignVerify(t *testing.T) {
	r, e := testKeys(t)
	for _, canon := range []string{"simple/simple", "relaxed/relaxed", "relaxed/simple"} {
		o := OptionsFrom(config.DKIM{Canonicalization: canon, Headers: config.Default().Milter.DKIM.Headers,
			OversignHeaders: config.Default().Milter.DKIM.OversignHeaders})
		for name, msg := range messages {
			out := signed(t, msg, []*Key{r, e}, o)
			vs := verifyGo(t, out, txtMap(r, e))
			if len(vs) != 2 || vs[0].Err != nil || vs[1].Err != nil {
				t.Errorf("%s %s: go-msgauth: %v / %v", canon, name, vs[0].Err, vs[1].Err)
			}
			if res, ok := verifyPython(t, out, txtMap(r, e)); !ok {
				t.Errorf("%s %s: dkimpy:\n%s", canon, name, res)
			}
		}
	}
}

func TestOversigning(t *testing.T) {
	r, _ := testKeys(t)
	o := OptionsFrom(config.Default().Milter.DKIM)
	out := signed(t, messages["folded"], []*Key{r}, o)
	// A second From added after signing must break the signature.
	tampered := bytes.Replace(out, []byte("From: Alice"), []byte("From: mallory@evil.example\r\nFrom: Alice"), 1)
	if res, ok := verifyPython(t, tampered, txtMap(r)); ok {
		t.Errorf("an added From still verifies:\n%s", res)
	}
	if vs := verifyGo(t, tampered, txtMap(r)); vs[0].Err == nil {
		t.Error("go-msgauth verified the tampered message")
	}
	keys := HeaderKeys([]string{"From", "To", "Subject", "X-Other", "Received"}, o)
	want := "From,From,Reply-To,Subject,Subject,Date,To,To,Cc,Message-ID,MIME-Version,Content-Type,Content-Transfer-Encoding"
	if got := strings.Join(keys, ","); got != want {
		t.Errorf("h= %s\nwant %s", got, want)
	}
}

func TestOpenDKIMVerifies(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/opendkim"); err != nil {
		t.Skip("opendkim not installed (.ci/run installs it)")
	}
	r, e := testKeys(t)
	out := signed(t, messages["folded"], []*Key{r, e}, OptionsFrom(config.Default().Milter.DKIM))
	dir := t.TempDir()
	var keys strings.Builder
	for n, v := range txtMap(r, e) {
		keys.WriteString(n + " " + v + "\n")
	}
	os.WriteFile(filepath.Join(dir, "keys"), []byte(keys.String()), 0o600)
	os.WriteFile(filepath.Join(dir, "verify.conf"), []byte("Mode v\nSyslog no\nTestPublicKeys "+filepath.Join(dir, "keys")+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "msg.eml"), out, 0o600)
	res, _ := exec.Command("/usr/sbin/opendkim", "-x", filepath.Join(dir, "verify.conf"), "-vvv", "-t", filepath.Join(dir, "msg.eml")).CombinedOutput()
	if n := strings.Count(string(res), "dkim=pass"); n != 2 {
		t.Errorf("opendkim: %d passes, want 2:\n%s", n, res)
	}
}

func TestLoadTable(t *testing.T) {
	dir := t.TempDir()
	r, e := testKeys(t)
	write := func(name string, k crypto.Signer, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := WriteKeyFile(p, k); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	rsaFile := write("rsa.key", r.Signer, 0o600)
	edFile := write("ed.key", e.Signer, 0o640)
	if err := WriteKeyFile(rsaFile, r.Signer); err == nil {
		t.Error("WriteKeyFile overwrote a key")
	}
	rows := []config.DKIMKey{
		{Domain: "Example.org", Selector: "rsa", KeyFile: rsaFile, Subdomains: true},
		{Domain: "example.org", Selector: "ed", KeyFile: edFile},
	}
	if _, _, err := LoadTable(rows, false); err == nil || !strings.Contains(err.Error(), "dkim key "+edFile+" has mode 0640: readable by others") {
		t.Errorf("group-readable key: %v", err)
	}
	tbl, _, err := LoadTable(rows, true)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(tbl.For("example.org")); n != 2 {
		t.Errorf("%d keys for example.org, want 2", n)
	}
	if ks := tbl.For("mail.sub.example.org"); len(ks) != 1 || ks[0].Selector != "rsa" {
		t.Errorf("subdomain: %v", ks)
	}
	if tbl.For("example.net") != nil || tbl.For("badexample.org") != nil {
		t.Error("keys for foreign domains")
	}
	// Other key formats: raw base64 Ed25519 (rspamd, dkimpy).
	raw := e.Signer.(interface{ Seed() []byte }).Seed()
	seedFile := filepath.Join(dir, "seed.key")
	os.WriteFile(seedFile, []byte(b64(raw)+"\n"), 0o600)
	if _, _, err := LoadTable([]config.DKIMKey{{Domain: "a.example", Selector: "s", KeyFile: seedFile}}, false); err != nil {
		t.Errorf("dkimpy seed key: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "junk.key"), []byte("junk"), 0o600)
	_, _, err = LoadTable([]config.DKIMKey{{Domain: "a.example", Selector: "s", KeyFile: filepath.Join(dir, "junk.key")}, {Domain: "b.example", Selector: "s", KeyFile: filepath.Join(dir, "missing.key")}}, false)
	if err == nil || !strings.Contains(err.Error(), "junk.key") || !strings.Contains(err.Error(), "missing.key") {
		t.Errorf("both bad rows should be reported: %v", err)
	}
}

func TestGeneratedRecordVerifies(t *testing.T) {
	k, err := GenerateKey("ed25519", 0)
	if err != nil {
		t.Fatal(err)
	}
	key := &Key{Selector: "new", Signer: k}
	out := signed(t, messages["folded"], []*Key{key}, OptionsFrom(config.Default().Milter.DKIM))
	line := ZoneLine("new", "example.org", k.Public())
	if !strings.HasPrefix(line, `new._domainkey.example.org. IN TXT ( "v=DKIM1; k=ed25519; p=`) {
		t.Errorf("zone line %q", line)
	}
	if vs := verifyGo(t, out, map[string]string{"new._domainkey.example.org": TXTRecord(k.Public())}); vs[0].Err != nil {
		t.Error(vs[0].Err)
	}
	if _, err := GenerateKey("rsa", 512); err == nil {
		t.Error("512-bit RSA accepted")
	}
}

func TestFromDomain(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
		err  bool
	}{
		{[]string{" Alice <alice@Example.ORG>"}, "example.org", false},
		{[]string{" bob@sub.example.org"}, "sub.example.org", false},
		{nil, "", true},
		{[]string{" a@x.example", " b@y.example"}, "", true},
		{[]string{" a@x.example, b@y.example"}, "", true},
		{[]string{" not an address"}, "", true},
	} {
		got, err := FromDomain(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("FromDomain(%q) = %q, %v", tc.in, got, err)
		}
	}
}

func FuzzParsePrivateKey(f *testing.F) {
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("MTdYZPqaSKrDF63DolRJ+Zp/tDzuBzJgwhQ5QIYP5MQ="))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = ParsePrivateKey(b) })
}

func benchSign(b *testing.B, keys []*Key) {
	msg := crlf("From: alice@example.org\nTo: bob@example.net\nSubject: bench\nDate: Mon, 24 Nov 2026 10:00:00 +0000\n\n" + strings.Repeat("A typical line of a typical message body.\n", 240))
	o := OptionsFrom(config.Default().Milter.DKIM)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Sign(strings.NewReader(msg), keys, o, "example.org"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignRSA2048(b *testing.B) { r, _ := testKeys(b); benchSign(b, []*Key{r}) }
func BenchmarkSignEd25519(b *testing.B) { _, e := testKeys(b); benchSign(b, []*Key{e}) }
func BenchmarkSignDual(b *testing.B)    { r, e := testKeys(b); benchSign(b, []*Key{r, e}) }

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
