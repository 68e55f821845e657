package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/milter/dkim"
)

// keygenIn runs keygen in dir and returns its output.
func keygenIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"keygen"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("keygen %q: %v\n%s", args, err, out)
	}
	return string(out)
}

func publicTXT(t *testing.T, keyFile string) string {
	data, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	k, err := dkim.ParsePrivateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	return dkim.TXTRecord(k.Public())
}

// doctorSetup writes a key and a config that sends from 192.0.2.10 as
// mail.example.org, with a DNS zone publishing all of it right.
func doctorSetup(t *testing.T) (cfg string, srv *dnstest.Server) {
	dir := t.TempDir()
	keygenIn(t, dir, "-domain", "example.org", "-selector", "ed", "-algorithm", "ed25519", "-owner", "")
	key := filepath.Join(dir, "example.org.ed.key")
	srv = dnstest.New(t, dnstest.Zone{
		"ed._domainkey.example.org": {TXT: [][]string{{publicTXT(t, key)}}},
		"example.org":               {TXT: [][]string{{"v=spf1 ip4:192.0.2.10 -all"}}},
		"_dmarc.example.org":        {TXT: [][]string{{"v=DMARC1; p=quarantine"}}},
		"10.2.0.192.in-addr.arpa":   {PTR: []string{"mail.example.org"}},
		"mail.example.org":          {A: []string{"192.0.2.10"}},
	})
	cfg = filepath.Join(dir, "mxdetour.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`[dns]
servers = [%q]
[self]
ipv4 = ["192.0.2.10"]
helo_name = "mail.example.org"
[milter.dkim]
rotation_state_file = %q
[[milter.dkim.keys]]
domain = "example.org"
selector = "ed"
key_file = %q
`, srv.Addr(), filepath.Join(dir, "rotation.json"), key)), 0o644)
	return cfg, srv
}

func runDoctor(t *testing.T, args ...string) (string, int) {
	out, err := exec.Command(bin, append([]string{"doctor"}, args...)...).Output()
	return string(out), exitCode(err)
}

// TestDoctorCommand: exit codes as Nagios reads them, one line per check
// with its fix, and the same as JSON.
func TestDoctorCommand(t *testing.T) {
	cfg, srv := doctorSetup(t)
	out, code := runDoctor(t, "-config", cfg)
	if code != 0 || !strings.HasPrefix(out, "DOCTOR OK: 0 critical, 0 warning, 5 ok\n") {
		t.Errorf("all published: exit %d\n%s", code, out)
	}

	srv.Set("example.org", dnstest.Records{TXT: [][]string{{"v=spf1 ip4:198.51.100.1 ~all"}}})
	out, code = runDoctor(t, "-config", cfg)
	if code != 1 || !strings.Contains(out, "WARNING  spf example.org 192.0.2.10: SPF of example.org does not cover 192.0.2.10 (softfail); fix: add ip4:192.0.2.10 to the SPF record of example.org\n") {
		t.Errorf("SPF without our address: exit %d\n%s", code, out)
	}

	srv.Delete("ed._domainkey.example.org")
	out, code = runDoctor(t, "-config", cfg, "-json")
	var got struct {
		Status   string
		Findings []struct{ Status, Check, Subject, Message, Fix string }
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if code != 2 || got.Status != "critical" || got.Findings[0].Status != "critical" || got.Findings[0].Subject != "ed._domainkey.example.org" ||
		!strings.HasPrefix(got.Findings[0].Fix, "publish: ed._domainkey.example.org. IN TXT") {
		t.Errorf("missing key record: exit %d\n%s", code, out)
	}

	for _, args := range [][]string{{"-config", cfg, "extra"}, {"-bogus"}} {
		cmd := exec.Command(bin, append([]string{"doctor"}, args...)...)
		out, err := cmd.CombinedOutput()
		if code := exitCode(err); code != 78 || !strings.Contains(string(out), "usage: mxdetour-milter doctor") {
			t.Errorf("%q: exit %d\n%s", args, code, out)
		}
	}
}

// TestKeygenNext: the next key of a rotation is named from the current
// one, lands beside it, and keygen says what happens next.
func TestKeygenNext(t *testing.T) {
	cfg, _ := doctorSetup(t)
	dir := filepath.Dir(cfg)
	out := keygenIn(t, t.TempDir(), "-next", "-domain", "example.org", "-config", cfg, "-owner", "")
	key := filepath.Join(dir, "example.org.ed2.key")
	if _, err := os.Stat(key); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{`ed2._domainkey.example.org. IN TXT ( "v=DKIM1; k=ed25519; p=`, `selector = "ed2"`, "keep the row of ed"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// With ed2 in the config, the next is ed3.
	f, _ := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	fmt.Fprintf(f, "[[milter.dkim.keys]]\ndomain = \"example.org\"\nselector = \"ed2\"\nkey_file = %q\n", key)
	f.Close()
	out = keygenIn(t, t.TempDir(), "-next", "-domain", "example.org", "-config", cfg, "-owner", "")
	if !strings.Contains(out, `selector = "ed3"`) {
		t.Errorf("after ed2:\n%s", out)
	}
	cmd := exec.Command(bin, "keygen", "-next", "-domain", "example.net", "-config", cfg)
	if out, err := cmd.CombinedOutput(); exitCode(err) != 78 || !strings.Contains(string(out), "no key for example.net") {
		t.Errorf("-next for a domain without keys: %v\n%s", err, out)
	}
}

// TestKeygenOwner: -owner gives the key to the milter's user, so that a
// key made as root does not stop the milter's start.
func TestKeygenOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	dir := t.TempDir()
	out := keygenIn(t, dir, "-domain", "example.org", "-selector", "s", "-algorithm", "ed25519", "-owner", "nobody")
	fi, err := os.Stat(filepath.Join(dir, "example.org.s.key"))
	if err != nil {
		t.Fatal(err)
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; strconv.Itoa(int(uid)) != u.Uid || fi.Mode().Perm() != 0o600 || !strings.Contains(out, "owned by nobody") {
		t.Errorf("uid %d mode %v\n%s", uid, fi.Mode(), out)
	}
	cmd := exec.Command(bin, "keygen", "-domain", "example.org", "-selector", "t", "-owner", "no-such-user-here")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); exitCode(err) != 78 || !strings.Contains(string(out), "no-such-user-here") {
		t.Errorf("unknown owner: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "example.org.t.key")); err == nil {
		t.Error("a key was written for an owner that does not exist")
	}
}
