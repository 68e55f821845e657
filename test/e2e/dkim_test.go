package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
	"go.uber.org/zap"
)

// verifyScript checks every DKIM-Signature of a message with dkimpy
// (Debian's python3-dkim), an implementation independent of ours; the
// milter's own tests use it too.
const verifyScript = "../../milter/dkim/testdata/verify.py"

// keygen runs `mxdetour-milter keygen` as a postmaster would and publishes
// the TXT record it prints in the test zone.
func (w *world) keygen(domain, selector, alg string) string {
	w.t.Helper()
	dir := filepath.Join(w.dir, "dkim")
	must(w.t, os.MkdirAll(dir, 0o700))
	out, err := exec.Command(binMilter, "keygen", "-domain", domain, "-selector", selector, "-algorithm", alg, "-dir", dir).CombinedOutput()
	if err != nil {
		w.t.Fatalf("keygen: %v\n%s", err, out)
	}
	var txt strings.Builder
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.Contains(l, " IN TXT ") {
			continue
		}
		for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(l, -1) {
			txt.WriteString(m[1])
		}
	}
	if !strings.Contains(txt.String(), "p=") {
		w.t.Fatalf("keygen printed no TXT record:\n%s", out)
	}
	name := selector + "._domainkey." + domain
	w.dns.Set(name, dnstest.Records{TXT: [][]string{{txt.String()}}})
	keyFile := filepath.Join(dir, domain+"."+selector+".key")
	if _, err := os.Stat(keyFile); err != nil {
		w.t.Fatalf("keygen wrote no %s: %v", keyFile, err)
	}
	return keyFile
}

// verifyDKIM checks msg with dkimpy, fetching each signature's key from the
// test zone over DNS.
func (w *world) verifyDKIM(msg string) (string, bool) {
	w.t.Helper()
	if err := exec.Command("/usr/bin/python3", "-c", "import dkim").Run(); err != nil {
		w.t.Skip("Debian's python3-dkim is not installed (.ci/run installs it)")
	}
	r, err := lookup.New(w.dns.Options(), zap.NewNop())
	must(w.t, err)
	args := []string{verifyScript, filepath.Join(w.dir, fmt.Sprintf("msg-%d.eml", time.Now().UnixNano()))}
	must(w.t, os.WriteFile(args[1], []byte(msg), 0o644))
	for _, sig := range dkimTags(msg) {
		name := sig["s"] + "._domainkey." + sig["d"]
		res := r.TXT(context.Background(), name)
		if res.Status != lookup.Answer {
			w.t.Fatalf("TXT %s: %v %v", name, res.Status, res.Err)
		}
		args = append(args, name+"="+strings.Join(res.TXT, ""))
	}
	out, err := exec.Command("/usr/bin/python3", args...).CombinedOutput()
	return string(out), err == nil
}

// dkimTags returns the tags of each DKIM-Signature header of msg.
func dkimTags(msg string) []map[string]string {
	head, _, _ := strings.Cut(strings.ReplaceAll(msg, "\r\n", "\n"), "\n\n")
	var sigs []map[string]string
	var cur *strings.Builder
	flush := func() {
		if cur == nil {
			return
		}
		tags := map[string]string{}
		for _, kv := range strings.Split(cur.String(), ";") {
			k, v, ok := strings.Cut(kv, "=")
			if ok {
				tags[strings.TrimSpace(k)] = strings.Join(strings.Fields(v), "")
			}
		}
		sigs = append(sigs, tags)
		cur = nil
	}
	for _, l := range strings.Split(head, "\n") {
		switch {
		case strings.HasPrefix(strings.ToLower(l), "dkim-signature:"):
			flush()
			cur = &strings.Builder{}
			cur.WriteString(l[len("dkim-signature:"):])
		case cur != nil && (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")):
			cur.WriteString(l)
		default:
			flush()
		}
	}
	flush()
	return sigs
}

// Scenario 3: authenticated and trusted submissions arrive signed with RSA
// and Ed25519, verified by dkimpy with the keys from the test zone;
// unauthenticated mail from outside is not signed.
func TestDKIMSigning(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	w := newWorld(t, worldOptions{Wiring: "socketmap"})
	rsaKey := w.keygen("sender.e2e", "rsa2026", "rsa")
	edKey := w.keygen("sender.e2e", "ed2026", "ed25519")
	w.rewriteConfig(fmt.Sprintf(`
[[milter.dkim.keys]]
domain = "sender.e2e"
selector = "rsa2026"
key_file = %q

[[milter.dkim.keys]]
domain = "sender.e2e"
selector = "ed2026"
key_file = %q
`, rsaKey, edKey))
	w.milter.waitOutput("reloaded", 10*time.Second)

	cases := []struct {
		name, rcpt string
		sub        submission
		signed     bool
	}{
		{"authenticated", "a1@plain.e2e", submission{ClientAddr: "203.0.113.50", Login: "alice"}, true},
		{"trusted network", "a2@plain.e2e", submission{}, true},
		{"outside, not authenticated", "a3@plain.e2e", submission{ClientAddr: "203.0.113.51"}, false},
	}
	for _, c := range cases {
		c.sub.From, c.sub.To = "alice@sender.e2e", []string{c.rcpt}
		c.sub.Body = "Caf\xc3\xa9 au lait, 8-bit body.\r\n" + strings.Repeat("A long line of text. ", 40) + "\r\n"
		if res := send(t, w.pf.addr(), c.sub); !res.accepted() {
			t.Fatalf("%s: not accepted: %+v", c.name, res)
		}
	}
	testutil.EventuallyWithin(t, 30*time.Second, "three messages delivered", func() bool { return len(w.direct.Received()) == 3 })
	for _, c := range cases {
		var msg string
		for _, m := range w.direct.Messages() {
			if m.Rcpts[0] == c.rcpt {
				msg = m.Data
			}
		}
		sigs := dkimTags(msg)
		if !c.signed {
			if len(sigs) != 0 {
				t.Errorf("%s: got %d DKIM signatures, want none", c.name, len(sigs))
			}
			continue
		}
		var algs []string
		for _, s := range sigs {
			algs = append(algs, s["a"])
		}
		if len(sigs) != 2 || !strings.Contains(strings.Join(algs, ","), "rsa-sha256") || !strings.Contains(strings.Join(algs, ","), "ed25519-sha256") {
			t.Errorf("%s: signatures %v, want rsa-sha256 and ed25519-sha256", c.name, algs)
			continue
		}
		if out, ok := w.verifyDKIM(msg); !ok {
			t.Errorf("%s: dkimpy did not verify:\n%s\nmessage:\n%s", c.name, out, msg)
		}
	}
}
