package dkim

import (
	"crypto"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// keyFiles writes the test keys as key files in a new directory.
func keyFiles(t *testing.T) (dir, rsaFile, edFile string) {
	t.Helper()
	dir = t.TempDir()
	r, e := testKeys(t)
	rsaFile, edFile = filepath.Join(dir, "rsa.key"), filepath.Join(dir, "ed.key")
	for f, k := range map[string]crypto.Signer{rsaFile: r.Signer, edFile: e.Signer} {
		if err := WriteKeyFile(f, k); err != nil {
			t.Fatal(err)
		}
	}
	return dir, rsaFile, edFile
}

func states(tbl *Table) []string {
	var out []string
	for _, s := range tbl.Status() {
		out = append(out, s.Domain+"/"+s.Selector+" "+string(s.State))
	}
	return out
}

// TestLoadTableDegraded: each kind of bad row is reported, naming its
// file and reason, and the good row still signs.
func TestLoadTableDegraded(t *testing.T) {
	dir, rsaFile, edFile := keyFiles(t)
	pub := filepath.Join(dir, "pub.key")
	txt := TXTRecord(rsaKey.Public())
	os.WriteFile(pub, []byte(txt[strings.Index(txt, "p=")+2:]), 0o600)
	junk := filepath.Join(dir, "junk.key")
	os.WriteFile(junk, []byte("# not a key!\n"), 0o600)
	open := filepath.Join(dir, "open.key")
	data, _ := os.ReadFile(rsaFile)
	os.WriteFile(open, data, 0o644)
	for _, tc := range []struct{ name, file, want string }{
		{"missing", filepath.Join(dir, "missing.key"), "missing.key: no such file or directory"},
		{"public key", pub, pub + " holds a public key"},
		{"wrong format", junk, junk + " holds no PEM private key"},
		{"readable by others", open, open + " has mode 0644: readable by others"},
	} {
		tbl, _, err := LoadTable([]KeyRow{
			{Domain: "example.org", Selector: "ed", KeyFile: edFile},
			{Domain: "example.org", Selector: "bad", KeyFile: tc.file},
		}, false)
		var ke *KeyError
		if !errors.As(err, &ke) || ke.File != tc.file || ke.Selector != "bad" || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want a *KeyError for %s saying %q", tc.name, err, tc.file, tc.want)
		}
		if ks := tbl.For("example.org"); len(ks) != 1 || ks[0].Selector != "ed" || tbl.Len() != 1 {
			t.Errorf("%s: keys %v, want the good one alone", tc.name, ks)
		}
		if d := cmp.Diff([]string{"example.org/ed loaded", "example.org/bad failed"}, states(tbl)); d != "" {
			t.Errorf("%s: status (-want +got):\n%s", tc.name, d)
		}
	}
}

// TestPermissionAdvice: a key the daemon's user cannot read gets the
// chown advice. (The tests run as root, who reads everything, so the
// error is made by hand.)
func TestPermissionAdvice(t *testing.T) {
	err := fileError("example.org", "/etc/mxdetour/k.key", &fs.PathError{Op: "open", Path: "/etc/mxdetour/k.key", Err: syscall.EACCES})
	want := "dkim key for example.org: open /etc/mxdetour/k.key: permission denied: the milter runs as user mxdetour; chown mxdetour /etc/mxdetour/k.key"
	if !strings.HasPrefix(err.Error(), want) || !errors.Is(err, fs.ErrPermission) {
		t.Errorf("got %q\nwant %q...", err, want)
	}
	if err := fileError("example.org", "f", fs.ErrNotExist); strings.Contains(err.Error(), "chown") {
		t.Errorf("chown advice for a missing file: %v", err)
	}
}

// TestKeepFrom: at a reload, a key whose file now fails keeps signing
// with the key loaded before, under its own domain and selector only.
func TestKeepFrom(t *testing.T) {
	_, rsaFile, edFile := keyFiles(t)
	rows := []KeyRow{
		{Domain: "example.org", Selector: "rsa", KeyFile: rsaFile},
		{Domain: "example.org", Selector: "ed", KeyFile: edFile},
	}
	prev, _, err := LoadTable(rows, false)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(rsaFile, []byte("overwritten by mistake"), 0o600)
	rows[1].Subdomains = true
	rows = append(rows, KeyRow{Domain: "example.net", Selector: "rsa", KeyFile: rsaFile})
	next, _, err := LoadTable(rows, false)
	if err == nil {
		t.Fatal("the overwritten key loaded")
	}
	kept := next.KeepFrom(prev)
	if len(kept) != 1 || kept[0].File != rsaFile || kept[0].State != Kept || kept[0].Err == nil {
		t.Errorf("kept %+v, want the example.org rsa key with its error", kept)
	}
	if d := cmp.Diff([]string{"example.org/rsa kept", "example.org/ed loaded", "example.net/rsa failed"}, states(next)); d != "" {
		t.Errorf("status (-want +got):\n%s", d)
	}
	ks := next.For("example.org")
	if len(ks) != 2 || !isRSA(ks[0]) || ks[1].Selector != "ed" {
		t.Errorf("keys for example.org: %v, want the old RSA key, then ed, in configuration order", ks)
	}
	if ks := next.For("sub.example.org"); len(ks) != 1 || ks[0].Selector != "ed" {
		t.Errorf("the new row's subdomains setting is not applied: %v", ks)
	}
	if next.For("example.net") != nil {
		t.Error("a key kept under another domain")
	}
	// A third load still keeps it: kept keys carry over.
	third, _, _ := LoadTable(rows, false)
	third.KeepFrom(next)
	if ks := third.For("example.org"); len(ks) != 2 || !isRSA(ks[0]) {
		t.Errorf("a kept key lost at the next reload: %v", ks)
	}
	if (&Table{}).KeepFrom(nil) != nil || next.Len() != 2 {
		t.Error("KeepFrom(nil) or Len")
	}
}

// isRSA reports whether k holds the test RSA key.
func isRSA(k *Key) bool {
	return k.Signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(rsaKey.Public())
}
