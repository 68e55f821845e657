package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

// Mail that Postfix's cleanup submits itself (sendmail, pickup) runs
// through non_smtpd_milters, which cannot reject a recipient at RCPT:
// Postfix 3.7.11 then logs "milter configuration error: can't reject
// recipient in non-smtpd(8) submission", answers pickup "message not
// accepted, try again later", and retries the maildrop file every second,
// for ever. Here `sendmail user@example.org` and `sendmail root` (whose
// address becomes root@mta.test.invalid: the harness's myorigin is
// reserved) must leave the maildrop at once; with the socketmap wiring
// they bounce (5.1.2, the error transport). smtpd still refuses a reserved
// recipient at RCPT with 550 5.1.2.
func TestNonSMTPDReservedRecipient(t *testing.T) {
	needPostfix(t)
	for _, wiring := range []string{"socketmap", "policy"} {
		t.Run(wiring, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, worldOptions{Wiring: wiring})
			maildrop := filepath.Join(w.pf.dir, "queue", "maildrop")
			for _, rcpt := range []string{"user@example.org", "root"} {
				sendmail(t, w.pf, "sender@sender.e2e", rcpt)
			}
			testutil.EventuallyWithin(t, 15*time.Second, "the maildrop emptied by pickup", func() bool {
				ents, err := os.ReadDir(maildrop)
				return err == nil && len(ents) == 0
			})
			full := "root@mta.test.invalid"
			if wiring == "socketmap" {
				for _, rcpt := range []string{"user@example.org", full} {
					w.pf.waitLog(`to=<`+regexp.QuoteMeta(rcpt)+`>.*dsn=5\.1\.2, status=bounced`, 15*time.Second)
				}
			} else {
				// No socketmap: the default route takes them (here the
				// direct sink), as any other non-smtpd mail.
				for _, rcpt := range []string{"user@example.org", full} {
					w.pf.waitLog(`to=<`+regexp.QuoteMeta(rcpt)+`>.*status=(sent|bounced)`, 30*time.Second)
				}
			}
			log := w.pf.log()
			for _, bad := range []string{"can't reject recipient in non-smtpd", "milter-reject: RCPT", "message not accepted, try again later"} {
				if strings.Contains(log, bad) {
					t.Errorf("maillog says %q", bad)
				}
			}
			// The milter says why it let them through (its log may reach
			// the pipe after Postfix has bounced them).
			w.milter.waitOutput("reserved recipient of a non-SMTP submission", 10*time.Second)

			// smtpd: still refused at RCPT.
			res := send(t, w.pf.addr(), submission{From: "sender@sender.e2e", To: []string{"nobody@example.org", "carol@plain.e2e"}})
			if rep := res.Rcpt["nobody@example.org"]; !strings.HasPrefix(rep, "550 5.1.2") {
				t.Errorf("smtpd RCPT nobody@example.org: got %q, want 550 5.1.2", rep)
			}
			if !res.accepted() {
				t.Fatalf("smtpd message not accepted for the other recipient: %+v", res)
			}
			testutil.EventuallyWithin(t, 30*time.Second, "carol delivered", func() bool { return w.direct.has("carol@plain.e2e") })
		})
	}
}

// sendmail submits a short message with Postfix's sendmail command of p
// (postdrop to the maildrop, then pickup and cleanup), as a local script
// does.
func sendmail(t *testing.T, p *postfix, from, to string) {
	t.Helper()
	c := exec.Command("/usr/sbin/sendmail", "-C", p.conf, "-f", from, "-i", "--", to)
	c.Stdin = strings.NewReader("Subject: local submission\n\nhello from a script\n")
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Run(); err != nil {
		t.Fatalf("sendmail %s: %v: %s", to, err, out.String())
	}
}
