package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/daemon/daemontest"
	"github.com/mxdetour/mxdetour/internal/testutil"
)

// verifyAllScript verifies every message of a directory with dkimpy
// (Debian's python3-dkim): each must carry want signatures, all passing.
// Keys come from a file of "NAME VALUE" lines (OpenDKIM's TestPublicKeys).
const verifyAllScript = `
import sys, os, dkim
keys = {}
for l in open(sys.argv[2]):
    n, v = l.rstrip("\n").split(" ", 1)
    keys[n.lower()] = v.encode()
def dnsfunc(name, timeout=5):
    n = name.decode() if isinstance(name, bytes) else name
    return keys.get(n.rstrip(".").lower())
want, bad, n = int(sys.argv[3]), 0, 0
for f in sorted(os.listdir(sys.argv[1])):
    msg = open(os.path.join(sys.argv[1], f), "rb").read()
    hdr = msg.replace(b"\r\n", b"\n").split(b"\n\n")[0].split(b"\n")
    sigs = sum(1 for l in hdr if l.lower().startswith(b"dkim-signature:"))
    ok = sigs == want and all(dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc) for i in range(sigs))
    n += 1
    if not ok:
        bad += 1
        print("FAIL", f, sigs)
print("verified", n - bad, "of", n)
sys.exit(1 if bad else 0)
`

// TestKeyDir300Verifiers: 300 customer domains (and Postfix's own three)
// get an RSA and an Ed25519 key each from keygen -all; the mail of every
// one of them is signed twice, and both signatures verify with dkimpy
// and with OpenDKIM. A 301st customer's key file and a reload sign its
// mail, no restart. Start and reload are timed (the target: under 1 s).
func TestKeyDir300Verifiers(t *testing.T) {
	if testing.Short() {
		t.Skip("generates 606 keys")
	}
	if err := exec.Command("/usr/bin/python3", "-c", "import dkim").Run(); err != nil {
		t.Skip("Debian's python3-dkim is not installed")
	}
	pf, customers := postfixConfig(t, 300)
	// OpenDKIM refuses keys and key lists under world-writable directories.
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	keys := filepath.Join(dir, "dkim")
	os.Mkdir(keys, 0o700)
	lport := testutil.FreePort(t)
	cfg := filepath.Join(dir, "mxdetour.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[milter]\nlisten = \"127.0.0.1:%d\"\n[milter.dkim]\nkey_dir = %q\n", lport, keys)), 0o644)
	gen := time.Now()
	out, err := exec.Command(bin, "keygen", "-all", "-config", cfg, "-postfix-config", pf, "-owner", "").CombinedOutput()
	if err != nil {
		t.Fatalf("keygen -all: %v\n%s", err, out)
	}
	recs := records(string(out))
	if len(recs) != 606 {
		t.Fatalf("%d records, want 606", len(recs))
	}
	t.Logf("keygen -all: 606 keys in %v", time.Since(gen))
	keyList := filepath.Join(dir, "public-keys")
	writeKeyList := func() {
		var names []string
		for n := range recs {
			names = append(names, n)
		}
		sort.Strings(names)
		var b strings.Builder
		for _, n := range names {
			b.WriteString(n + " " + recs[n] + "\n")
		}
		os.WriteFile(keyList, []byte(b.String()), 0o600)
	}
	writeKeyList()

	start := time.Now()
	p := daemontest.Start(t, exec.Command(bin, "-config", cfg))
	addr := fmt.Sprintf("127.0.0.1:%d", lport)
	testutil.Eventually(t, "the milter listening", func() bool { return canDial(addr) })
	t.Logf("start with 606 keys of 303 domains: %v (exec to accepting, polled every 10ms)", time.Since(start))
	if !regexp.MustCompile(`dkim_keys.{0,4}606`).MatchString(p.Output()) {
		t.Errorf("start does not log 606 keys:\n%s", p.Output())
	}

	msgs := filepath.Join(dir, "msgs")
	os.Mkdir(msgs, 0o700)
	domains := append([]string{"hoster.zz", "mx.hoster.zz", "relayed.zz"}, customers...)
	for _, d := range domains {
		os.WriteFile(filepath.Join(msgs, d+".eml"), sendFrom(t, addr, d), 0o600)
	}
	verifyAll(t, msgs, keyList, len(domains))

	// The 301st customer: a key file (two) and a reload.
	more := filepath.Join(dir, "new")
	os.WriteFile(more, []byte("customer300.zz\n"), 0o644)
	out, err = exec.Command(bin, "keygen", "-all", "-config", cfg, "-postfix-config", "-", "-domains", more, "-owner", "").CombinedOutput()
	if err != nil || len(records(string(out))) != 2 {
		t.Fatalf("keygen -all for the new customer: %v\n%s", err, out)
	}
	for n, v := range records(string(out)) {
		recs[n] = v
	}
	writeKeyList()
	pid := p.Cmd.Process.Pid
	hup := time.Now()
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testutil.Eventually(t, "the reload", func() bool { return strings.Contains(p.Output(), "new keys and country data in use") })
	t.Logf("reload with 608 keys: %v (SIGHUP to the log line, polled every 10ms)", time.Since(hup))
	if p.Cmd.Process.Pid != pid || !regexp.MustCompile(`new keys and country data in use.*dkim_keys.{0,4}608`).MatchString(p.Output()) {
		t.Errorf("the reload does not log 608 keys:\n%s", p.Output())
	}
	os.RemoveAll(msgs)
	os.Mkdir(msgs, 0o700)
	for _, d := range []string{"customer300.zz", "customer000.zz"} {
		os.WriteFile(filepath.Join(msgs, d+".eml"), sendFrom(t, addr, d), 0o600)
	}
	verifyAll(t, msgs, keyList, 2)
	p.Stop(t)
}

// verifyAll checks that each of the n messages of dir carries two
// signatures that dkimpy and OpenDKIM (when installed) both pass.
func verifyAll(t *testing.T, dir, keyList string, n int) {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", "-c", verifyAllScript, dir, keyList, "2").CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("verified %d of %d", n, n)) {
		t.Errorf("dkimpy: %v\n%s", err, out)
	}
	if _, err := os.Stat("/usr/sbin/opendkim"); err != nil {
		t.Log("opendkim not installed: OpenDKIM's verification skipped")
		return
	}
	conf := filepath.Join(filepath.Dir(dir), "opendkim-verify.conf")
	os.WriteFile(conf, []byte("Mode v\nSyslog no\nTestPublicKeys "+keyList+"\n"), 0o600)
	ents, _ := os.ReadDir(dir)
	passed := 0
	for _, e := range ents {
		res, _ := exec.Command("/usr/sbin/opendkim", "-x", conf, "-vvv", "-t", filepath.Join(dir, e.Name())).CombinedOutput()
		if c := strings.Count(string(res), "dkim=pass"); c != 2 {
			t.Errorf("opendkim, %s: %d passes, want 2:\n%s", e.Name(), c, res)
			continue
		}
		passed++
	}
	if passed != n {
		t.Errorf("opendkim passed %d of %d messages", passed, n)
	}
	t.Logf("dkimpy and opendkim verified both signatures of %d messages", passed)
}
