package dkim

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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

// defaultOptions are the signing options of the default configuration.
func defaultOptions() Options { return canonOptions(config.Default().Milter.DKIM.Canonicalization) }

// canonOptions are the default options with canon ("header/body").
func canonOptions(canon string) Options {
	h, b, _ := strings.Cut(canon, "/")
	d := config.Default().Milter.DKIM
	return Options{HeaderCanon: h, BodyCanon: b, Headers: d.Headers, Oversign: d.OversignHeaders}
}

func TestSignVerify(t *testing.T) {
	r, e := testKeys(t)
	for _, canon := range []string{"simple/simple", "relaxed/relaxed", "relaxed/simple"} {
		o := canonOptions(canon)
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
	o := defaultOptions()
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
	out := signed(t, messages["folded"], []*Key{r, e}, defaultOptions())
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
	rows := []KeyRow{
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
	// The issue: the Ed25519 TXT p= value put in a key_file was taken for a seed.
	txt := TXTRecord(e.Signer.Public())
	pubFile := filepath.Join(dir, "pub.key")
	os.WriteFile(pubFile, []byte(txt[strings.Index(txt, "p=")+2:]+"\n"), 0o600)
	_, _, err = LoadTable([]KeyRow{{Domain: "a.example", Selector: "s", KeyFile: pubFile}}, false)
	if err == nil || !strings.Contains(err.Error(), "dkim key "+pubFile+" holds a public key (the DNS record's p= value") {
		t.Errorf("public key as key_file: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "junk.key"), []byte("junk"), 0o600)
	_, _, err = LoadTable([]KeyRow{{Domain: "a.example", Selector: "s", KeyFile: filepath.Join(dir, "junk.key")}, {Domain: "b.example", Selector: "s", KeyFile: filepath.Join(dir, "missing.key")}}, false)
	if err == nil || !strings.Contains(err.Error(), "junk.key") || !strings.Contains(err.Error(), "missing.key") {
		t.Errorf("both bad rows should be reported: %v", err)
	}
}

// TestParsePrivateKey feeds the key loader what keygen writes, what
// OpenDKIM users have, and what gets put in a key_file by mistake; the
// mistakes must be refused with words for what the file holds.
func TestParsePrivateKey(t *testing.T) {
	r, e := testKeys(t)
	rsaPriv, edPriv := r.Signer.(*rsa.PrivateKey), e.Signer.(ed25519.PrivateKey)
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	must := func(b []byte, err error) []byte {
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	keygenRSA, keygenEd := must(MarshalPrivateKey(rsaPriv)), must(MarshalPrivateKey(edPriv))
	edTXT := TXTRecord(edPriv.Public())
	edP := edTXT[strings.Index(edTXT, "p=")+2:]
	rsaTXT := TXTRecord(rsaPriv.Public())
	rsaP := rsaTXT[strings.Index(rsaTXT, "p=")+2:]
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	cert := must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, edPriv.Public(), edPriv))
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name string
		data []byte
		want string // the algorithm, or a part of the error
	}{
		{"keygen RSA (PEM PKCS#8)", keygenRSA, "rsa"},
		{"keygen Ed25519 (PEM PKCS#8)", keygenEd, "ed25519"},
		{"PEM PKCS#1 RSA (opendkim-genkey)", pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaPriv)), "rsa"},
		{"keygen key with a blank line around it", append(append([]byte("\n"), keygenEd...), '\n'), "ed25519"},

		{"Ed25519 p= value", []byte(edP + "\n"), "holds a public key (the DNS record's p= value, 32 bytes"},
		{"RSA p= value", []byte(rsaP + "\n"), "holds a public key (the DNS record's p= value), not a private key"},
		{"RSA p= value, wrapped", []byte(rsaP[:64] + "\n" + rsaP[64:] + "\n"), "holds a public key (the DNS record's p= value)"},
		{"TXT record", []byte(edTXT + "\n"), "holds a DNS TXT record (the public key), not a private key"},
		{"zone line", []byte(ZoneLine("ed", "example.org", rsaPriv.Public()) + "\n"), "holds a DNS TXT record"},
		{"p= tag alone", []byte("p=" + edP), "holds a DNS TXT record"},
		{"PEM PUBLIC KEY", pemOf("PUBLIC KEY", must(x509.MarshalPKIXPublicKey(edPriv.Public()))), "holds a public key (PEM PUBLIC KEY;"},
		{"PEM RSA PUBLIC KEY", pemOf("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsaPriv.PublicKey)), "holds a public key (PEM RSA PUBLIC KEY;"},
		{"certificate", pemOf("CERTIFICATE", cert), "holds a certificate, not a private key"},
		{"key and certificate", append(append([]byte{}, keygenEd...), pemOf("CERTIFICATE", cert)...), "holds more than one PEM block (PRIVATE KEY, then CERTIFICATE)"},
		{"public key labelled PRIVATE KEY", pemOf("PRIVATE KEY", must(x509.MarshalPKIXPublicKey(edPriv.Public()))), "not a PKCS#8 private key (a public key"},
		{"raw 32-byte seed (dkimpy)", []byte(b64(edPriv.Seed())), "holds a public key (the DNS record's p= value, 32 bytes: an Ed25519 public key, or a bare seed"},
		{"raw 64-byte key (rspamd)", []byte(b64(edPriv)), "holds a raw 64-byte Ed25519 key, not a PEM private key"},
		{"base64 DER without PEM lines", []byte(b64(must(x509.MarshalPKCS8PrivateKey(edPriv)))), "holds base64 DER data (a PKCS#8 private key) without its PEM lines"},
		{"binary DER", must(x509.MarshalPKCS8PrivateKey(rsaPriv)), "holds binary DER data (a PKCS#8 private key)"},
		{"encrypted PKCS#8", pemOf("ENCRYPTED PRIVATE KEY", []byte{0x30, 0}), "holds an encrypted private key"},
		{"encrypted PKCS#1", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{0}}), "holds an encrypted private key"},
		{"EC key", pemOf("EC PRIVATE KEY", must(x509.MarshalECPrivateKey(ecKey))), "holds an EC (ECDSA) private key"},
		{"ECDSA in PKCS#8", pemOf("PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(ecKey))), "of a kind DKIM does not use (*ecdsa.PrivateKey)"},
		{"OpenSSH key", pemOf("OPENSSH PRIVATE KEY", []byte("x")), `holds a PEM "OPENSSH PRIVATE KEY" block, not a private key`},
		{"garbage", []byte("# not a key!\n"), "holds no PEM private key"},
		{"short base64", []byte("AAAA"), "holds 3 bytes of base64, not a PEM private key"},
		{"empty", []byte(" \n"), "is empty"},
	} {
		k, err := ParsePrivateKey(tc.data)
		got := ""
		switch k.(type) {
		case *rsa.PrivateKey:
			got = "rsa"
		case ed25519.PrivateKey:
			got = "ed25519"
		}
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, tc.want) || (err != nil) == (tc.want == "rsa" || tc.want == "ed25519") {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestKeyFilesFromTools loads what opendkim-genkey and openssl write, and
// refuses the DNS record opendkim-genkey writes beside the key.
func TestKeyFilesFromTools(t *testing.T) {
	dir := t.TempDir()
	load := func(file string) error {
		os.Chmod(file, 0o600)
		_, _, err := LoadTable([]KeyRow{{Domain: "example.org", Selector: "s", KeyFile: file}}, false)
		return err
	}
	t.Run("opendkim-genkey", func(t *testing.T) {
		if _, err := exec.LookPath("opendkim-genkey"); err != nil {
			t.Skip("opendkim-genkey is not installed (Debian: opendkim-tools)")
		}
		if out, err := exec.Command("opendkim-genkey", "-b", "2048", "-d", "example.org", "-s", "sel", "-D", dir).CombinedOutput(); err != nil {
			t.Fatalf("opendkim-genkey: %v\n%s", err, out)
		}
		if err := load(filepath.Join(dir, "sel.private")); err != nil {
			t.Errorf("opendkim-genkey's key: %v", err)
		}
		txt := filepath.Join(dir, "sel.txt")
		if err := load(txt); err == nil || !strings.Contains(err.Error(), "dkim key "+txt+" holds a DNS TXT record (the public key), not a private key") {
			t.Errorf("opendkim-genkey's DNS record as key_file: %v", err)
		}
	})
	t.Run("openssl", func(t *testing.T) {
		if _, err := exec.LookPath("openssl"); err != nil {
			t.Skip("openssl is not installed")
		}
		run := func(args ...string) {
			t.Helper()
			if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
				t.Fatalf("openssl %v: %v\n%s", args, err, out)
			}
		}
		ed, pub, rsa1 := filepath.Join(dir, "ed.pem"), filepath.Join(dir, "ed.pub"), filepath.Join(dir, "rsa1.pem")
		run("genpkey", "-algorithm", "ed25519", "-out", ed)
		run("pkey", "-in", ed, "-pubout", "-out", pub)
		run("genrsa", "-traditional", "-out", rsa1, "2048")
		for _, f := range []string{ed, rsa1} {
			if err := load(f); err != nil {
				t.Errorf("openssl key %s: %v", filepath.Base(f), err)
			}
		}
		if err := load(pub); err == nil || !strings.Contains(err.Error(), "dkim key "+pub+" holds a public key") {
			t.Errorf("openssl public key as key_file: %v", err)
		}
	})
}

func TestGeneratedRecordVerifies(t *testing.T) {
	k, err := GenerateKey("ed25519", 0)
	if err != nil {
		t.Fatal(err)
	}
	key := &Key{Selector: "new", Signer: k}
	out := signed(t, messages["folded"], []*Key{key}, defaultOptions())
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
	f.Add([]byte("v=DKIM1; k=ed25519; p=MTdYZPqaSKrDF63DolRJ+Zp/tDzuBzJgwhQ5QIYP5MQ="))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParsePrivateKey(b)
		if (k == nil) == (err == nil) {
			t.Fatalf("ParsePrivateKey = %v, %v: want a key or an error", k, err)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "holds ") && !strings.HasPrefix(err.Error(), "is empty") {
			t.Fatalf("error %q does not say what the file holds", err)
		}
	})
}

func benchSign(b *testing.B, keys []*Key) {
	msg := crlf("From: alice@example.org\nTo: bob@example.net\nSubject: bench\nDate: Mon, 24 Nov 2026 10:00:00 +0000\n\n" + strings.Repeat("A typical line of a typical message body.\n", 240))
	o := defaultOptions()
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
