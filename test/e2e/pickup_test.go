package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/testutil"
	"github.com/mxdetour/mxdetour/milter/pickup"
)

// Issue #25: mail that a local account submits with the sendmail command
// (a web script's mail()) passes pickup and cleanup, never smtpd, so
// Postfix never asks the policy service. The milter asks instead, keyed by
// the account Postfix names in pickup's Received: header (copied by the
// header_checks line of package pickup into a header the milter sees), and
// policyd counts it in the same store as smtpd's: past the limit the
// messages are quarantined into the hold queue, alerted once, listed by
// `holds` under local_user:NAME and released by `holds release`. An
// SMTP-authenticated client and another local account keep their own
// counts, and the header never leaves the host.
func TestLocalUserLimits(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	h := newHook(t)
	extra := fmt.Sprintf(`
[[limits]]
key = "local_user"
max = 10
window = "1h"

[[limits]]
key = "sasl_username"
max = 3
window = "1h"
exempt = ["local_user:nobody"]   # nobody has the local_user limit above; root's mail counts here

[alerts]
webhook_url = "%s/hook"
interval = "0s"
`, h.srv.URL)
	w := newWorld(t, worldOptions{Wiring: "socketmap", ExtraCfg: extra, BeforeStart: func(w *world) {
		// The scripts' mail is signed too (127.0.0.0/8 is trusted).
		w.writeConfig(extra + fmt.Sprintf("\n[[milter.dkim.keys]]\ndomain = \"sender.e2e\"\nselector = \"rsa2026\"\nkey_file = %q\n",
			w.keygen("sender.e2e", "rsa2026", "rsa")))
	}})
	checks := filepath.Join(w.pf.conf, "mxdetour-local-user.regexp")
	must(t, os.WriteFile(checks, []byte(pickup.HeaderChecks+"\n"), 0o644))
	w.pf.cmd("postconf", "-e",
		"header_checks = regexp:"+checks,
		fmt.Sprintf("mxdetour_limits = check_policy_service { inet:127.0.0.1:%d, timeout=2s, try_limit=1, default_action=DUNNO, policy_context=limits }", w.ports.policy),
		"smtpd_recipient_restrictions = $mxdetour_limits, permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
		"smtpd_end_of_data_restrictions = $mxdetour_limits")
	w.pf.cmd("postfix", "reload")
	w.pf.waitLog(`reload -- version`, 20*time.Second)
	as := localSubmitter(t, w.pf)

	const n = 30
	var nobody []string
	for i := range n {
		rcpt := fmt.Sprintf("n%d@plain.e2e", i)
		nobody = append(nobody, rcpt)
		as("nobody", rcpt)
	}
	delivered := func(rcpts ...string) int {
		k := 0
		for _, r := range rcpts {
			if w.relay.has(r) || w.direct.has(r) {
				k++
			}
		}
		return k
	}
	testutil.EventuallyWithin(t, 60*time.Second, "nobody's 20 messages past the limit in the hold queue", func() bool { return len(w.pf.heldQueue()) == n-10 })
	testutil.EventuallyWithin(t, 60*time.Second, "nobody's first 10 delivered", func() bool { return delivered(nobody...) == 10 })

	// root is another account: its mail goes, counted under its own key.
	as("root", "r1@plain.e2e")
	// alice (SMTP AUTH) has her own window: 3 go, the 4th is held.
	for i := range 4 {
		res := send(t, w.pf.addr(), submission{Login: "alice", From: "alice@sender.e2e", To: []string{fmt.Sprintf("a%d@plain.e2e", i)}})
		if !res.accepted() {
			t.Fatalf("alice's message %d not accepted: %+v", i, res)
		}
	}
	testutil.EventuallyWithin(t, 30*time.Second, "root's and alice's first three delivered", func() bool {
		return delivered("r1@plain.e2e", "a0@plain.e2e", "a1@plain.e2e", "a2@plain.e2e") == 4
	})
	testutil.EventuallyWithin(t, 30*time.Second, "alice's 4th held too", func() bool { return len(w.pf.heldQueue()) == n-10+1 })
	if delivered(nobody...) != 10 || delivered("a3@plain.e2e") != 0 {
		t.Errorf("held mail delivered: nobody %d, alice's 4th %d", delivered(nobody...), delivered("a3@plain.e2e"))
	}
	// Postfix's header is gone from what left.
	for _, s := range []*sink{w.relay, w.direct} {
		for _, m := range s.Messages() {
			if strings.Contains(strings.ToLower(m.Data), strings.ToLower(pickup.Header)) {
				t.Errorf("%s left with %s:\n%s", m.Rcpts, pickup.Header, m.Data)
			}
		}
	}
	w.milter.waitOutput(`"local_user": "nobody"`, 10*time.Second)

	// One alert for nobody, with the count and the destination.
	testutil.EventuallyWithin(t, 20*time.Second, "the limit alerts at the webhook", func() bool { return len(h.kind("limit")) >= 2 })
	var mine []map[string]string
	for _, e := range h.kind("limit") {
		if e.Fields["key"] == "local_user:nobody" {
			mine = append(mine, e.Fields)
		}
	}
	if len(mine) != 1 || mine[0]["count"] != "11" || mine[0]["max"] != "10" || !strings.Contains(mine[0]["destinations"], "plain.e2e") {
		t.Errorf("alerts for local_user:nobody: %+v", mine)
	}

	// holds lists both keys.
	var listed struct {
		Keys []struct {
			Key      string `json:"key"`
			Messages []struct {
				ID string `json:"queue_id"`
			} `json:"messages"`
		} `json:"keys"`
	}
	testutil.EventuallyWithin(t, 20*time.Second, "holds -json listing nobody's 20 and alice's 1", func() bool {
		out, err := runCmd(binPolicyd, "holds", "-config", w.cfgPath, "-json")
		if err != nil || json.Unmarshal([]byte(out), &listed) != nil {
			t.Logf("holds: %v\n%s", err, out)
			return false
		}
		got := map[string]int{}
		for _, k := range listed.Keys {
			got[k.Key] = len(k.Messages)
		}
		return len(got) == 2 && got["local_user:nobody"] == n-10 && got["sasl_username:alice"] == 1
	})
	out, err := runCmd(binPolicyd, "holds", "-config", w.cfgPath)
	if err != nil || !strings.Contains(out, "local_user:nobody: 20 held (mxdetour: local_user limit exceeded (11/10 in 1h))") {
		t.Errorf("holds (%v):\n%s", err, out)
	}

	// Release nobody's: all delivered, alice's stays held.
	wasHeld := w.pf.heldQueue()
	out, err = runCmd(binPolicyd, "holds", "-config", w.cfgPath, "release", "local_user:nobody")
	if err != nil || !strings.Contains(out, "released 20 held messages of local_user:nobody") {
		t.Fatalf("holds release (%v):\n%s", err, out)
	}
	w.flushUntil(90*time.Second, "nobody's released messages delivered", func() bool { return delivered(nobody...) == n })
	// Signed, held and released: the signature still verifies (the
	// deleted header was never signed).
	var released []message
	for _, s := range []*sink{w.relay, w.direct} {
		for _, m := range s.Messages() {
			if slices.Contains(wasHeld, m.Rcpts[0]) {
				released = append(released, m)
			}
		}
	}
	if len(released) != n-10 {
		t.Errorf("%d released messages of nobody found at the sinks, want %d", len(released), n-10)
	}
	for _, m := range released {
		if len(dkimTags(m.Data)) != 1 {
			t.Errorf("a released message of nobody is not signed:\n%s", m.Data)
		}
	}
	switch {
	case len(released) == 0:
	case exec.Command("/usr/bin/python3", "-c", "import dkim").Run() != nil:
		t.Log("Debian's python3-dkim is not installed: the signature is not verified (.ci/run installs it)")
	default:
		if out, ok := w.verifyDKIM(released[0].Data); !ok {
			t.Errorf("dkimpy did not verify a released message of nobody:\n%s\n%s", out, released[0].Data)
		}
	}
	if held := w.pf.heldQueue(); len(held) != 1 || held[0] != "a3@plain.e2e" {
		t.Errorf("held after the release: %v, want alice's a3 alone", held)
	}
	// The window is reset: nobody's next message goes.
	w.policyd.waitOutput("limits reset", 10*time.Second)
	as("nobody", "n-after@plain.e2e")
	testutil.EventuallyWithin(t, 30*time.Second, "nobody's mail after the release delivered", func() bool { return delivered("n-after@plain.e2e") == 1 })
}

// localSubmitter returns a function that submits a message with p's
// sendmail command as a local account, as a web script's mail() does: the
// maildrop file is the account's, and pickup's Received: header names its
// uid. Postfix's postdrop (set-group-id) honours another configuration
// directory for a user other than root only when the default main.cf
// lists it in alternate_config_directories: the command runs in a mount
// namespace of its own where /etc/postfix says so; the host's is never
// touched.
func localSubmitter(t *testing.T, p *postfix) func(user, to string) {
	t.Helper()
	etc := filepath.Join(p.dir, "etc-postfix")
	must(t, os.MkdirAll(etc, 0o755))
	must(t, os.WriteFile(filepath.Join(etc, "main.cf"), []byte("alternate_config_directories = "+p.conf+"\n"), 0o644))
	for _, f := range []string{"dynamicmaps.cf", "dynamicmaps.cf.d", "postfix-files", "postfix-files.d"} {
		if _, err := os.Stat(filepath.Join("/etc/postfix", f)); err == nil {
			run(t, "cp", "-a", filepath.Join("/etc/postfix", f), etc)
		}
	}
	var mu sync.Mutex // one submission at a time: pickup's order is the test's
	return func(user, to string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		script := fmt.Sprintf("mount --bind %s /etc/postfix && exec su -s /bin/sh %s -c '/usr/sbin/sendmail -C %s -i -- %s'", etc, user, p.conf, to)
		c := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
		c.Stdin = strings.NewReader("From: " + user + "@sender.e2e\nSubject: from a web script\n\nhello from " + user + "\n")
		var out bytes.Buffer
		c.Stdout, c.Stderr = &out, &out
		if err := c.Run(); err != nil {
			if strings.Contains(out.String(), "mount") || strings.Contains(out.String(), "unshare") {
				t.Skipf("cannot submit as %s: no mount namespace here (%v: %s)", user, err, out.String())
			}
			t.Fatalf("sendmail as %s to %s: %v: %s", user, to, err, out.String())
		}
	}
}
