package learn

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nxadm/tail/watch"
	"go.uber.org/zap/zaptest"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

// Real-format lines (Postfix's smtp(8) delivery lines; the replies as
// published in public reports and the providers' pages), with the syslog
// prefix a Debian mail.log has.
const pfx = "Nov 24 10:00:00 mx1 "

var lines = []struct {
	name, line string
	block      bool
	kind       string
}{
	{"gmail 421 low reputation", pfx + `postfix/smtp[1612]: 97B425F905: to=<someone@gmail.com>, orig_to=<x@y>, relay=alt1.gmail-smtp-in.l.google.com[173.194.72.26]:25, delay=180970, delays=180958/0.03/11/0.69, dsn=4.7.0, status=deferred (host alt1.gmail-smtp-in.l.google.com[173.194.72.26] said: 421-4.7.0 [128.199.95.148      15] Our system has detected that this message is 421-4.7.0 suspicious due to the very low reputation of the sending IP address. 421-4.7.0 To protect our users from spam, mail sent from your IP address has 421-4.7.0 been temporarily rate limited. Please visit 421 4.7.0  https://support.google.com/mail/answer/188131 for more information. a78si25816854pfj.35 - gsmtp (in reply to end of DATA command))`, true, "gmail-ip-reputation"},
	{"workspace 4.7.28", pfx + `postfix/smtp[1]: 1A2B3C4D5E: to=<a@customer.example.net>, relay=alt1.aspmx.l.google.com[74.125.28.26]:25, delay=332, delays=328/0.03/3.4/0.57, dsn=4.7.28, status=deferred (host alt1.aspmx.l.google.com[74.125.28.26] said: 421-4.7.28 [xxx.59.88.xxx       4] Our system has detected an unusual rate of 421-4.7.28 unsolicited mail originating from your IP address. To protect our 421-4.7.28 users from spam, mail sent from your IP address has been temporarily 421-4.7.28 rate limited. Please visit 421-4.7.28  https://support.google.com/mail/?p=UnsolicitedRateLimitError to 421 4.7.28 review our Bulk Email Senders Guidelines. z1si9679476pln.401 - gsmtp (in reply to end of DATA command))`, true, "gmail-ip-reputation"},
	{"gmail 550 bounced", pfx + `postfix/smtp[3006]: 4424441E46: to=<RECP@gmail.com>, relay=gmail-smtp-in.l.google.com[66.102.1.27]:25, delay=0.58, delays=0.01/0.01/0.2/0.35, dsn=5.7.1, status=bounced (host gmail-smtp-in.l.google.com[66.102.1.27] said: 550-5.7.1 [104.248.27.183       1] Our system has detected an unusual rate of 550-5.7.1 unsolicited mail originating from your IP address. To protect our 550-5.7.1 users from spam, mail sent from your IP address has been blocked. 550-5.7.1 Please visit 550-5.7.1  https://support.google.com/mail/?p=UnsolicitedIPError to review our 550 5.7.1 Bulk Email Senders Guidelines. q16si3475662wrs.311 - gsmtp (in reply to end of DATA command))`, true, "gmail-ip-reputation"},
	{"gmail not authorized", pfx + `postfix/smtp[1093692]: 4Wy9rQ2dx2dz8vdt: to=<mail@gmail.com>, relay=aspmx.l.google.com[142.250.1.26]:25, delay=3.3, delays=0.13/0.08/1.6/1.5, dsn=5.7.1, status=bounced (host aspmx.l.google.com[142.250.1.26] said: 550-5.7.1 [1.123.123.123] The IP you're using to send mail is not authorized to 550-5.7.1 send email directly to our servers. Please use the SMTP relay at your 550-5.7.1 service provider instead. For more information, go to 550 5.7.1  https://support.google.com/mail/?p=NotAuthorizedError x - gsmtp (in reply to end of DATA command))`, true, "gmail-ip-reputation"},
	{"outlook S3140", pfx + `postfix/smtp[9]: AB12CD34EF: to=<u@hotmail.co.uk>, relay=eur.olc.protection.outlook.com[104.47.124.33]:25, delay=1, delays=0/0/0.5/0.5, dsn=5.7.1, status=bounced (host eur.olc.protection.outlook.com[104.47.124.33] said: 550 5.7.1 Unfortunately, messages from [87.247.242.5] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3140). You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors. [HK2APC01FT029.eop-APC01.prod.protection.outlook.com] (in reply to MAIL FROM command))`, true, "microsoft-S3140"},
	{"outlook S3150", pfx + `postfix/smtp[9]: AB12CD34F0: to=<u@outlook.com>, relay=outlook-com.olc.protection.outlook.com[104.47.40.33]:25, delay=1, delays=0/0/0.5/0.5, dsn=5.7.1, status=bounced (host outlook-com.olc.protection.outlook.com[104.47.40.33] said: 550 5.7.1 Unfortunately, messages from [62.210.82.129] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150). You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors. (in reply to MAIL FROM command))`, true, "microsoft-S3150"},
	{"m365 5.7.606", pfx + `postfix/smtp[9]: AB12CD34F1: to=<u@contoso.example>, relay=contoso-example.mail.protection.outlook.com[52.101.1.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=5.7.606, status=bounced (host contoso-example.mail.protection.outlook.com[52.101.1.1] said: 550 5.7.606 Access denied, banned sending IP [192.0.2.5]. To request removal from this list please visit https://sender.office.com/ and follow the directions. (AS16012609) (in reply to RCPT TO command))`, true, "microsoft-banned-ip"},
	{"m365 blocked using spamhaus", pfx + `postfix/smtp[9]: AB12CD34F2: to=<u@fabrikam.example>, relay=fabrikam-example.mail.protection.outlook.com[52.101.1.2]:25, delay=1, delays=0/0/0.5/0.5, dsn=5.7.1, status=bounced (host fabrikam-example.mail.protection.outlook.com[52.101.1.2] said: 550 5.7.1 Service unavailable, Client host [192.0.2.5] blocked using Spamhaus. To request removal from this list see https://www.spamhaus.org/query/ip/192.0.2.5 (AS16012611) (in reply to RCPT TO command))`, true, "dnsbl:spamhaus"},
	{"postfix receiver spamhaus", pfx + `postfix/smtp[18759]: BEDD0988164: to=<grace@spamhaus.example>, relay=127.0.0.1[127.0.0.1]:2532, delay=0.11, delays=0.01/0.03/0/0.06, dsn=5.7.1, status=bounced (host 127.0.0.1[127.0.0.1] said: 550 5.7.1 Service unavailable, Client host [203.0.113.5] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/203.0.113.5 (in reply to RCPT TO command))`, true, "dnsbl:zen.spamhaus.org"},
	{"gmo-rbl refused to talk", pfx + `postfix/smtp[4095]: C7C8531C0DCD: to=<t@jp.example>, relay=mail.jp.example[198.51.100.8]:25, delay=67443, delays=67442/0/0.49/0, dsn=4.7.1, status=deferred (host mail.jp.example[198.51.100.8] refused to talk to me: 450 4.7.1 Service unavailable; Client host [192.0.2.5] blocked using gmo-rbl.jp; Poor Reputation Sender)`, true, "dnsbl:gmo-rbl.jp"},
	{"yahoo TSS04", pfx + `postfix/smtp[1283]: F024DAA029B: to=<jfm79@aol.com>, relay=mx-aol.mail.gm0.yahoodns.net[98.136.96.92]:25, delay=59235, delays=59232/0.06/2.3/0.13, dsn=4.7.0, status=deferred (host mx-aol.mail.gm0.yahoodns.net[98.136.96.92] said: 421 4.7.0 [TSS04] Messages from 78.225.183.108 temporarily deferred due to user complaints - 4.16.55.1; see https://help.yahoo.com/kb/postmaster/SLN3434.html (in reply to MAIL FROM command))`, true, "yahoo"},
	{"relay syslog_name", "2026-11-24T10:00:00.123456+00:00 mx1 " + `postfix/smtp-ipv4/smtp[77]: 0A1B2C3D4E: to=<x@blocklisted.example>, relay=mx.blocklisted.example[198.51.100.9]:25, delay=1, delays=0/0/0.5/0.5, dsn=5.7.1, status=bounced (host mx.blocklisted.example[198.51.100.9] said: 554 5.7.1 Your IP is on our blacklist (in reply to RCPT TO command))`, true, "generic-blocklist"},

	{"user unknown", pfx + `postfix/smtp[5]: 11AA22BB33: to=<nobody@gmail.com>, relay=gmail-smtp-in.l.google.com[66.102.1.27]:25, delay=1, delays=0/0/0.5/0.5, dsn=5.1.1, status=bounced (host gmail-smtp-in.l.google.com[66.102.1.27] said: 550-5.1.1 The email account that you tried to reach does not exist. (in reply to RCPT TO command))`, false, ""},
	{"mailbox full", pfx + `postfix/smtp[5]: 11AA22BB34: to=<full@example.net>, relay=mx.example.net[198.51.100.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=5.2.2, status=bounced (host mx.example.net[198.51.100.1] said: 552 5.2.2 Mailbox full (in reply to RCPT TO command))`, false, ""},
	{"tls failure", pfx + `postfix/smtp[5]: 11AA22BB35: to=<a@example.net>, relay=mx.example.net[198.51.100.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=4.7.5, status=deferred (host mx.example.net[198.51.100.1] said: 454 4.7.5 TLS handshake failed, blocked (in reply to STARTTLS command))`, false, ""},
	{"greylisting", pfx + `postfix/smtp[5]: 11AA22BB36: to=<a@example.net>, relay=mx.example.net[198.51.100.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=4.7.1, status=deferred (host mx.example.net[198.51.100.1] said: 450 4.7.1 <a@example.net>: Recipient address rejected: Greylisted, see https://postgrey.schweikert.ch/ (in reply to RCPT TO command))`, false, ""},
	{"recipient rate", pfx + `postfix/smtp[5]: 11AA22BB37: to=<busy@gmail.com>, relay=gmail-smtp-in.l.google.com[66.102.1.27]:25, delay=1, delays=0/0/0.5/0.5, dsn=4.2.1, status=deferred (host gmail-smtp-in.l.google.com[66.102.1.27] said: 450-4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages (in reply to RCPT TO command))`, false, ""},
	{"open resolver", pfx + `postfix/smtp[5]: 11AA22BB38: to=<a@misconfigured.example>, relay=mx.misconfigured.example[198.51.100.2]:25, delay=1, delays=0/0/0.5/0.5, dsn=5.7.1, status=bounced (host mx.misconfigured.example[198.51.100.2] said: 554 5.7.1 Service unavailable; Client host [192.0.2.5] blocked using zen.spamhaus.org; Error: open resolver; https://www.spamhaus.org/returnc/pub/8.8.8.8 (in reply to RCPT TO command))`, false, ""},
	{"content", pfx + `postfix/smtp[5]: 11AA22BB39: to=<a@gmail.com>, relay=gmail-smtp-in.l.google.com[66.102.1.27]:25, delay=1, delays=0/0/0.5/0.5, dsn=5.7.1, status=bounced (host gmail-smtp-in.l.google.com[66.102.1.27] said: 550-5.7.1 Our system has detected that this message is likely unsolicited mail. UnsolicitedMessageError (in reply to end of DATA command))`, false, ""},
	{"domain reputation", pfx + `postfix/smtp[5]: 11AA22BB3A: to=<a@gmail.com>, relay=gmail-smtp-in.l.google.com[66.102.1.27]:25, delay=1, delays=0/0/0.5/0.5, dsn=4.7.0, status=deferred (host gmail-smtp-in.l.google.com[66.102.1.27] said: 421-4.7.0 This message is suspicious due to the very low reputation of the sending domain. (in reply to end of DATA command))`, false, ""},
	{"dmarc 5.7.26", pfx + `postfix/smtp[5]: 11AA22BB3B: to=<a@gmail.com>, relay=gmail-smtp-in.l.google.com[66.102.1.27]:25, delay=1, delays=0/0/0.5/0.5, dsn=5.7.26, status=bounced (host gmail-smtp-in.l.google.com[66.102.1.27] said: 550-5.7.26 Unauthenticated email is not accepted from this domain (in reply to end of DATA command))`, false, ""},
	{"sent", pfx + `postfix/smtp[5]: 11AA22BB3C: to=<a@gmail.com>, relay=gmail-smtp-in.l.google.com[66.102.1.27]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 2.0.0 OK blocked using nothing)`, false, ""},
	{"connection timeout", pfx + `postfix/smtp[5]: 11AA22BB3D: to=<a@example.net>, relay=none, delay=30, delays=0/0/30/0, dsn=4.4.1, status=deferred (connect to mx.example.net[198.51.100.1]:25: Connection timed out)`, false, ""},
}

func TestClassifyTable(t *testing.T) {
	c, err := NewClassifier(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range lines {
		d, ok := ParseLine(tc.line)
		if !ok {
			t.Errorf("%s: not parsed", tc.name)
			continue
		}
		v := c.Classify(d)
		if v.Block != tc.block || (tc.block && v.Kind != tc.kind) {
			t.Errorf("%s: block %v kind %q (%s), want block %v kind %q", tc.name, v.Block, v.Kind, v.Why, tc.block, tc.kind)
		}
	}
}

func TestParseLine(t *testing.T) {
	d, ok := ParseLine(lines[0].line)
	if !ok {
		t.Fatal("not parsed")
	}
	got := []any{d.Service, d.QueueID, d.Recipient, d.OrigRecipient, d.RelayHost, d.RelayAddr.String(), d.RelayPort, d.DSN, d.Status, d.Time.Month(), d.Time.Day()}
	want := []any{"smtp", "97B425F905", "someone@gmail.com", "x@y", "alt1.gmail-smtp-in.l.google.com", "173.194.72.26", 25, "4.7.0", "deferred", time.November, 24}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(d.Reply, "host alt1.gmail-smtp-in.l.google.com[173.194.72.26] said: 421-4.7.0") || !strings.HasSuffix(d.Reply, "(in reply to end of DATA command)") {
		t.Errorf("reply %q", d.Reply)
	}
	nf, ok := ParseLine(pfx + `postfix/smtp[1295]: BC495AA0516: host mta7.am0.yahoodns.net[67.195.228.110] said: 421 4.7.0 [TSS04] Messages from 78.225.183.108 temporarily deferred (in reply to MAIL FROM command)`)
	if !ok || nf.Recipient != "" || nf.RelayHost != "mta7.am0.yahoodns.net" || nf.QueueID != "BC495AA0516" {
		t.Errorf("non-final line: %+v %v", nf, ok)
	}
	for _, bad := range []string{"", pfx + "postfix/qmgr[1]: ABCDEF12345: removed", pfx + "postfix/smtpd[1]: connect from x[1.2.3.4]", pfx + "postfix/smtp[1]: ABCDE: to=<a@b>, relay=none"} {
		if _, ok := ParseLine(bad); ok {
			t.Errorf("parsed %q", bad)
		}
	}
}

func TestConfigPatterns(t *testing.T) {
	if _, err := NewClassifier([]string{"("}, nil); err == nil || !strings.Contains(err.Error(), `patterns: "("`) {
		t.Errorf("bad pattern: %v", err)
	}
	c, _ := NewClassifier([]string{`our special refusal`}, []string{`zen\.spamhaus\.org`})
	d := Delivery{Status: "deferred", Reply: "host x[1.2.3.4] said: 550 our special refusal"}
	if v := c.Classify(d); !v.Block || v.Kind != "config" {
		t.Errorf("config pattern: %+v", v)
	}
	d.Reply = "host x[1.2.3.4] said: 554 blocked using zen.spamhaus.org"
	if v := c.Classify(d); v.Block {
		t.Errorf("ignore pattern not applied: %+v", v)
	}
}

func newStore(t *testing.T, path string) *Store {
	t.Helper()
	s, err := OpenStore(path, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s := newStore(t, path)
	now := time.Now()
	if !s.Add(Block{Domain: "gmail.com", MXHost: "gmail-smtp-in.l.google.com", Kind: "k", Learned: now, Expires: now.Add(time.Hour), QueueIDs: []string{"A"}}) {
		t.Error("first block not new")
	}
	if s.Add(Block{Domain: "gmail.com", MXHost: "gmail-smtp-in.l.google.com", Kind: "k", Learned: now, Expires: now.Add(2 * time.Hour), QueueIDs: []string{"B"}}) {
		t.Error("repeated block counted as new")
	}
	if b, ok := s.Lookup("other.example", []string{"gmail-smtp-in.l.google.com"}, now); !ok || b.Domain != "gmail.com" || len(b.QueueIDs) != 2 {
		t.Errorf("lookup by MX host: %+v %v", b, ok)
	}
	if _, ok := s.Lookup("gmail.com", nil, now.Add(3*time.Hour)); ok {
		t.Error("expired block still found")
	}
	s.SetOffset(Offset{Path: "/var/log/mail.log", Inode: 7, Pos: 99})
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("state file mode %v", fi.Mode())
	}
	s2 := newStore(t, path)
	if _, ok := s2.Lookup("gmail.com", nil, now); !ok || s2.Offset().Pos != 99 {
		t.Error("state did not survive a restart")
	}
	// `blocks forget` in another process, then the daemon saves: the
	// forgotten block stays forgotten.
	cli := newStore(t, path)
	if !cli.Forget("gmail.com") || cli.Save() != nil {
		t.Fatal("forget")
	}
	s2.Add(Block{Domain: "new.example", Learned: time.Now(), Expires: time.Now().Add(time.Hour)})
	if err := s2.Save(); err != nil {
		t.Fatal(err)
	}
	s3 := newStore(t, path)
	if got := len(s3.List(time.Now())); got != 1 {
		t.Errorf("%d blocks after forget + save, want 1 (new.example)", got)
	}
}

func TestCorruptStateSetAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	os.WriteFile(path, []byte("{not json"), 0o640)
	s := newStore(t, path)
	if len(s.List(time.Now())) != 0 {
		t.Error("blocks from a corrupt file")
	}
	m, _ := filepath.Glob(filepath.Join(dir, "state.json.corrupt-*"))
	if len(m) != 1 {
		t.Errorf("corrupt file not set aside: %v", m)
	}
}

// TestFollow writes a delivery log, rotates it both ways, restarts the
// learner, and requeues through a real (fake) postqueue executable, the
// one beside learn.postsuper.
func TestFollow(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "mail.log")
	statePath := filepath.Join(dir, "state.json")
	calls := filepath.Join(dir, "postqueue.calls")
	postsuper := filepath.Join(dir, "postsuper")
	os.WriteFile(postsuper, []byte("#!/bin/sh\necho postsuper \"$@\" >> "+calls+"\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "postqueue"), []byte("#!/bin/sh\necho \"$@\" >> "+calls+"\n"), 0o755)

	now := time.Now()
	line := func(id, dom, status string) string {
		return fmt.Sprintf("%s mx1 postfix/smtp[1]: %s: to=<u@%s>, relay=mx.%s[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=5.7.1, status=%s (host mx.%s[192.0.2.1] said: 554 5.7.1 Service unavailable; Client host [192.0.2.5] blocked using zen.spamhaus.org (in reply to RCPT TO command))\n",
			now.Format(time.RFC3339), id, dom, dom, status, dom)
	}
	appendTo := func(s string) {
		f, err := os.OpenFile(logFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o640)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
		f.Close()
	}
	run := func() (*Store, *Learner, context.CancelFunc, chan struct{}) {
		s := newStore(t, statePath)
		c, _ := NewClassifier(nil, nil)
		l := NewLearner(Options{Source: SourceFile, LogFile: logFile, BlockTTL: time.Hour, Requeue: true, Postsuper: postsuper,
			PostfixConfig: "/etc/postfix-test", RequeueDelay: time.Millisecond, SaveEvery: 50 * time.Millisecond}, c, s, zaptest.NewLogger(t))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { l.Run(ctx); l.Wait(); close(done) }()
		return s, l, cancel, done
	}
	waitBlock := func(s *Store, dom string) {
		t.Helper()
		testutil.Eventually(t, "a block learned for "+dom, func() bool { _, ok := s.Lookup(dom, nil, time.Now()); return ok })
	}

	appendTo(line("AAAAA1", "one.example", "deferred"))
	s, l, cancel, done := run()
	waitBlock(s, "one.example")
	// rename and create
	os.Rename(logFile, logFile+".1")
	appendTo(line("BBBBB2", "two-after-rename.example", "bounced"))
	waitBlock(s, "two-after-rename.example")
	// copytruncate. nxadm/tail tells a truncation by the size going down
	// when it looks, after an inotify event or a poll: the line after the
	// truncation is shorter than the one before, so whenever it looks the
	// file is shorter than what was read. It must be looking, though: a
	// change made before its watch is set is not seen.
	testutil.Eventually(t, "the new log watched", func() bool { return l.polling.Load() || watch.Events(logFile) != nil })
	os.Truncate(logFile, 0)
	appendTo(line("CCCCC3", "three.example", "deferred"))
	waitBlock(s, "three.example")
	cancel()
	<-done

	// Restart: resumes at the stored offset, learns only what is new.
	if !s.Forget("three.example") || s.Save() != nil {
		t.Fatal("forget")
	}
	appendTo(line("DDDDD4", "four.example", "deferred"))
	s2, _, cancel2, done2 := run()
	waitBlock(s2, "four.example") // lines are learned in order: three, if at all, before four
	if _, ok := s2.Lookup("three.example", nil, time.Now()); ok {
		t.Error("an old line was learned again after the restart")
	}
	cancel2()
	<-done2
	b, _ := os.ReadFile(calls)
	// Requeues run each on its own timer: their order is not told.
	lines := strings.SplitAfter(string(b), "\n")
	slices.Sort(lines)
	got := strings.Join(lines, "")
	want := "-c /etc/postfix-test -i AAAAA1\n-c /etc/postfix-test -i CCCCC3\n-c /etc/postfix-test -i DDDDD4\n"
	if got != want {
		t.Errorf("postqueue calls:\n%s\nwant (deferred messages only, once each):\n%s", got, want)
	}
}

func TestOldLinesNotLearned(t *testing.T) {
	s := newStore(t, filepath.Join(t.TempDir(), "s.json"))
	c, _ := NewClassifier(nil, nil)
	l := NewLearner(Options{BlockTTL: time.Hour}, c, s, zaptest.NewLogger(t))
	old := time.Now().Add(-2 * time.Hour).Format(time.RFC3339)
	l.Handle(old+" mx1 postfix/smtp[1]: ABCDE1: to=<u@old.example>, relay=mx.old.example[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=5.7.1, status=bounced (host mx.old.example[192.0.2.1] said: 554 5.7.1 blocked using zen.spamhaus.org (in reply to RCPT TO command))", time.Now())
	if len(s.List(time.Now())) != 0 {
		t.Error("a line older than the block lifetime created a block")
	}
}

func FuzzParseLine(f *testing.F) {
	for _, l := range lines {
		f.Add(l.line)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := ParseLine(s)
		if ok && d.QueueID == "" {
			t.Fatal("parsed without a queue id")
		}
		c, _ := NewClassifier(nil, nil)
		c.Classify(d)
	})
}

func BenchmarkStoreLookupMiss(b *testing.B) {
	s, _ := OpenStore(filepath.Join(b.TempDir(), "s.json"), zaptest.NewLogger(b))
	s.Add(Block{Domain: "x.example", MXHost: "mx.x.example", Expires: time.Now().Add(time.Hour)})
	hosts := []string{"gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com"}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := s.Lookup("gmail.com", hosts, now); ok {
			b.Fatal("hit")
		}
	}
}

// BenchmarkStoreSave measures one save of 200 blocks: merge check, JSON,
// temporary file, two fsyncs, the previous copy, rename.
func BenchmarkStoreSave(b *testing.B) {
	s, _ := OpenStore(filepath.Join(b.TempDir(), "s.json"), zaptest.NewLogger(b))
	now := time.Now()
	for i := range 200 {
		s.Add(Block{Domain: fmt.Sprintf("d%d.example", i), MXHost: "mx.example", Kind: "k",
			Reply: strings.Repeat("x", 300), Learned: now, Expires: now.Add(time.Hour)})
	}
	for b.Loop() {
		if err := s.Save(); err != nil {
			b.Fatal(err)
		}
	}
}
