package server_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/policyd/policy"
	"github.com/mxdetour/mxdetour/policyd/server"
)

// The daemon joins what the learner reads in the delivery log to the
// account the policy requests named: a local account whose 30 messages
// bounced 80% with unknown users is held; one whose failures are all
// refusals of our IP is not.
func TestFailureRatioFromTheLog(t *testing.T) {
	srv := dnstest.New(t, zone())
	dir := t.TempDir()
	logFile := filepath.Join(dir, "mail.log")
	if err := os.WriteFile(logFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.DNS.Servers = []string{srv.Addr()}
	cfg.Learn.Source, cfg.Learn.LogFile = "file", logFile
	cfg.Learn.StateFile = filepath.Join(dir, "state.json")
	cfg.Learn.Requeue = false
	cfg.Compromise.Failures = true
	d, err := server.Start(cfg, server.Options{Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop(context.Background())
	n := 0
	submit := func(user string) (string, string) {
		n++
		id := fmt.Sprintf("A%04dB", n)
		return id, d.Responder().Policy(context.Background(), &policy.Request{Request: "smtpd_access_policy", ProtocolState: "END-OF-MESSAGE",
			Instance: "milter:" + id, QueueID: id, LocalUser: user, Sender: user + "@ours.test", RecipientCount: 1})
	}
	f, err := os.OpenFile(logFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stamp := time.Now().UTC().Format(time.Stamp)
	logLine := func(id, rcpt, dsn, status, reply string) {
		fmt.Fprintf(f, "%s mx postfix/smtp[77]: %s: to=<%s>, relay=mx.dest.test[192.0.2.25]:25, delay=1, delays=0/0/0/1, dsn=%s, status=%s (%s)\n",
			stamp, id, rcpt, dsn, status, reply)
	}
	for i := range 30 {
		// listed's line first: once www-data is held, all of them were read.
		id, _ := submit("listed")
		logLine(id, fmt.Sprintf("u%d@gmail.test", i), "5.7.1", "bounced",
			"host gmail-smtp-in.l.google.com[192.0.2.26] said: 550-5.7.1 [192.0.2.1] Our system has detected that this message is likely suspicious due to the very low reputation of the sending IP address. (in reply to end of DATA command)")
		id, a := submit("www-data")
		if a != "DUNNO" {
			t.Fatalf("www-data message %d: %q", i, a)
		}
		if i < 24 {
			logLine(id, fmt.Sprintf("u%d@dest.test", i), "5.1.1", "bounced",
				"host mx.dest.test[192.0.2.25] said: 550 5.1.1 <u@dest.test>: Recipient address rejected: User unknown (in reply to RCPT TO command)")
		} else {
			logLine(id, "friend@dest.test", "2.0.0", "sent", "250 2.0.0 Ok: queued as X")
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, a := submit("www-data")
		if strings.HasPrefix(a, "HOLD mxdetour: failure ratio") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("www-data not held 10s after its failures were logged: %q", a)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, a := submit("listed"); a != "DUNNO" {
		t.Errorf("an account whose every failure is a block of our IP: %q", a)
	}
}
