package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

// TestBounceSigned: a bounce Postfix writes itself (From
// MAILER-DAEMON@$myhostname) passes the milter when
// internal_mail_filter_classes = bounce, as contrib/postfix and wire set
// it, and leaves signed by the key of $myhostname; dkimpy verifies it.
// It has no client login and no smtpd session: the milter signs it as
// mail posted on this host.
func TestBounceSigned(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	w := newWorld(t, worldOptions{Wiring: "socketmap", Postfix: postfixOptions{Extra: []string{
		"myhostname = mta.bounce.e2e",
		"internal_mail_filter_classes = bounce",
	}}})
	key := w.keygen("mta.bounce.e2e", "ed2026", "ed25519")
	w.rewriteConfig(fmt.Sprintf(`
[[milter.dkim.keys]]
domain = "mta.bounce.e2e"
selector = "ed2026"
key_file = %q
`, key))
	w.milter.waitOutput("reloaded", 10*time.Second)

	w.direct.Refuse("refusing.e2e", "550 5.1.1 <nobody@refusing.e2e>: no such user here")
	sub := submission{From: "alice@sender.e2e", To: []string{"nobody@refusing.e2e"}, Body: "This will bounce.\r\n"}
	if res := send(t, w.pf.addr(), sub); !res.accepted() {
		t.Fatalf("not accepted: %+v", res)
	}
	var bounce message
	testutil.EventuallyWithin(t, 60*time.Second, "the bounce delivered to alice", func() bool {
		for _, m := range w.direct.Messages() {
			if len(m.Rcpts) == 1 && m.Rcpts[0] == "alice@sender.e2e" && m.From == "" {
				bounce = m
				return true
			}
		}
		return false
	})
	if !strings.Contains(bounce.Data, "MAILER-DAEMON@mta.bounce.e2e") {
		t.Fatalf("not Postfix's bounce:\n%s", bounce.Data)
	}
	sigs := dkimTags(bounce.Data)
	if len(sigs) != 1 || sigs[0]["d"] != "mta.bounce.e2e" || sigs[0]["s"] != "ed2026" {
		t.Fatalf("bounce signatures %v, want one by d=mta.bounce.e2e s=ed2026:\n%s", sigs, bounce.Data)
	}
	if out, ok := w.verifyDKIM(bounce.Data); !ok {
		t.Errorf("dkimpy did not verify the bounce:\n%s\nmessage:\n%s", out, bounce.Data)
	}
	if !strings.Contains(w.milter.output(), "signed_d") {
		t.Errorf("no signed message logged:\n%s", w.milter.output())
	}
}
