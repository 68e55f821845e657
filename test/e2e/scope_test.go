package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
)

// s3150Reply is Microsoft's refusal of our network (policyd/learn's
// classify_test.go has it with its source).
const s3150Reply = "550 5.7.1 Unfortunately, messages from [127.0.0.1] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150). You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors."

// A provider-wide block (issue 24): with microsoft's route "when-listed"
// and nothing listed, tenant A's MX refuses us with S3150. The learner
// recognises the refusing host as Microsoft's by its network (the direct
// sink's address is in AS8075 in the test DNS), learns a block of every
// Microsoft destination, and the first message to tenant B (another MX
// host under mail.protection.outlook.com, recognised by name) goes to the
// relay on its first try. `blocks` says the block is provider-wide;
// `blocks forget microsoft` forgets it.
func TestProviderWideBlock(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	w := newWorld(t, worldOptions{Wiring: "socketmap", DirectHost: "127.0.0.2", StatusFilter: true,
		ExtraCfg: "[providers.microsoft]\nroute = \"when-listed\"\nzones = []\n",
		BeforeStart: func(w *world) {
			w.dns.Set("tenanta.e2e", dnstest.Records{TTL: 60, MX: []lookup.MX{{Host: "tenanta-e2e.mail.protection.outlook.com", Pref: 0}}})
			w.dns.Set("tenantb.e2e", dnstest.Records{TTL: 60, MX: []lookup.MX{{Host: "tenantb-e2e.mail.protection.outlook.com", Pref: 0}}})
			w.dns.Set("2.0.0.127.origin.asn.e2e", dnstest.Records{TXT: [][]string{{"8075 | 127.0.0.0/8 | US | arin | 2024-01-01"}}})
		}})
	w.direct.Refuse("tenanta.e2e", s3150Reply)
	w.direct.Refuse("tenantb.e2e", s3150Reply)

	a := submitOne(t, w.pf, "sender@sender.e2e", "a@tenanta.e2e")
	w.pf.waitLog(a+`: to=<a@tenanta\.e2e>, relay=127\.0\.0\.2\[127\.0\.0\.2\]:\d+, .*status=deferred .*\(S3150\)`, 30*time.Second)
	w.policyd.waitOutput("microsoft refuses our IP at every destination it hosts", 10*time.Second)

	sent := time.Now()
	b := submitOne(t, w.pf, "sender@sender.e2e", "b@tenantb.e2e")
	w.pf.waitLog(fmt.Sprintf(`%s: to=<b@tenantb\.e2e>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*status=sent`, b, w.relay.port()), 30*time.Second)
	t.Logf("tenant B at the relay %s after submission", time.Since(sent).Round(100*time.Millisecond))
	for _, l := range queueLines(w.pf.log(), b) {
		if strings.Contains(l, "to=<b@tenantb.e2e>") && !strings.Contains(l, "status=sent") {
			t.Errorf("tenant B's message was tried elsewhere first: %s", l)
		}
	}
	if w.direct.has("b@tenantb.e2e") {
		t.Error("tenant B's MX accepted the message")
	}

	var out string
	var err error
	testutil.EventuallyWithin(t, 10*time.Second, "`blocks` showing tenanta.e2e's block as provider-wide", func() bool { // saved within a second
		out, err = runCmd(binPolicyd, "blocks", "-config", w.cfgPath)
		return err == nil && strings.Contains(out, "tenanta.e2e") && strings.Contains(out, "scope=provider-wide (every destination of microsoft)")
	})
	out, err = runCmd(binPolicyd, "check", "-config", w.cfgPath, "someone@tenantb.e2e")
	if err != nil || !strings.Contains(out, "every destination of microsoft") {
		t.Errorf("`check` does not explain the provider-wide block (%v):\n%s", err, out)
	}
	out, err = runCmd(binPolicyd, "blocks", "-config", w.cfgPath, "forget", "microsoft")
	if err != nil || !strings.Contains(out, "forgot tenanta.e2e") {
		t.Errorf("`blocks forget microsoft` (%v):\n%s", err, out)
	}
}
