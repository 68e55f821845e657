package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/testutil"
	"github.com/mxdetour/mxdetour/milter/pickup"
)

// Issue #25, the failure-ratio signal, on a real Postfix: a local account
// whose 30 messages failed 80% with unknown users (the sink answers 550
// 5.1.1) has its next message held and one alert names it with the
// figures and the failing destination; an account whose failures were
// all refusals of our IP (learned as a block, its later mail relayed) is
// not held.
func TestFailureRatio(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	h := newHook(t)
	extra := fmt.Sprintf(`
[compromise]
failures = true
failure_ratio = 0.5
failure_min = 30
failure_window = "1h"

[alerts]
webhook_url = "%s/hook"
interval = "0s"
`, h.srv.URL)
	w := newWorld(t, worldOptions{Wiring: "socketmap", ExtraCfg: extra})
	w.direct.Refuse("retry.e2e", unknownReply)
	w.direct.Refuse("blocked.e2e", "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org")
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

	// daemon's mail fails only because the destination refuses our IP.
	for i := range 30 {
		as("daemon", fmt.Sprintf("d%d@blocked.e2e", i))
	}
	results := func(prefix string) int {
		return len(regexp.MustCompile(`to=<`+prefix+`\d+@[^>]*>.*status=(sent|bounced|deferred|SOFTBOUNCE)`).FindAllString(w.pf.log(), -1))
	}
	// nobody's: 24 unknown users, 6 delivered.
	for i := range 30 {
		if i < 24 {
			as("nobody", fmt.Sprintf("n%d@retry.e2e", i))
		} else {
			as("nobody", fmt.Sprintf("n%d@plain.e2e", i))
		}
	}
	testutil.EventuallyWithin(t, 90*time.Second, "a result for each of nobody's 30 messages in the log", func() bool { return results("n") >= 30 })
	w.policyd.waitOutput(`failure ratio reached`, 20*time.Second)
	as("nobody", "after@plain.e2e")
	testutil.EventuallyWithin(t, 60*time.Second, "nobody's next message in the hold queue", func() bool {
		return slices.Contains(w.pf.heldQueue(), "after@plain.e2e")
	})

	w.flushUntil(90*time.Second, "a result for each of daemon's 30 messages", func() bool { return results("d") >= 30 })
	as("daemon", "d-after@plain.e2e")
	testutil.EventuallyWithin(t, 60*time.Second, "daemon's next message delivered", func() bool { return w.direct.has("d-after@plain.e2e") })
	if held := w.pf.heldQueue(); len(held) != 1 {
		t.Errorf("held: %v, want nobody's after@plain.e2e alone", held)
	}

	testutil.EventuallyWithin(t, 20*time.Second, "the compromise alert at the webhook", func() bool { return len(h.kind("compromise")) >= 1 })
	ev := h.kind("compromise")
	f := ev[0].Fields
	if len(ev) != 1 || f["key"] != "local_user:nobody" || f["failed"] != "24" || f["count"] != "30" ||
		f["destinations"] != "retry.e2e (24)" || !strings.Contains(f["failures"], "unknown recipient (24)") {
		t.Errorf("alerts: %+v", ev)
	}
	out, err := runCmd(binPolicyd, "holds", "-config", w.cfgPath)
	if err != nil || !strings.Contains(out, "local_user:nobody: 1 held (mxdetour: failure ratio (%) exceeded (80/50 in 1h))") {
		t.Errorf("holds (%v):\n%s", err, out)
	}
}
