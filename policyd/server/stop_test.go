package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/mxdetour/mxdetour/internal/alert"
	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
	"github.com/mxdetour/mxdetour/policyd/route"
	"github.com/mxdetour/mxdetour/policyd/server"
)

// TestStopSendsQueuedAlerts: an alert still queued when the daemon stops
// (the interval holds it back an hour) is at the webhook when Stop
// returns, not dropped.
func TestStopSendsQueuedAlerts(t *testing.T) {
	z := zone()
	for _, d := range []string{"a.mxd", "b.mxd"} {
		z[d] = dnstest.Records{MX: []lookup.MX{{Host: "mx." + d, Pref: 10}}}
		z["mx."+d] = dnstest.Records{A: []string{"192.0.2.30"}}
	}
	srv := dnstest.New(t, z)
	var mu sync.Mutex
	var got []alert.Event
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p alert.Payload
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		got = append(got, p.Events...)
	}))
	defer hook.Close()
	received := func() []alert.Event {
		mu.Lock()
		defer mu.Unlock()
		return append([]alert.Event(nil), got...)
	}
	path := writeConfig(t, srv.Addr(), fmt.Sprintf("source = \"file\"\nrequeue = false\n[domains]\nfrom_postfix = false\n"+
		"[alerts]\nwebhook_url = \"%s/hook\"\ninterval = \"1h\"\n", hook.URL))
	cfg, _, err := config.LoadDefault(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.Learn.LogFile, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	s, err := server.Start(cfg, server.Options{Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			s.Stop(context.Background())
		}
	}()
	refuse := func(dom string) {
		t.Helper()
		f, err := os.OpenFile(cfg.Learn.LogFile, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fmt.Fprintf(f, "%s mx1 postfix/smtp[1]: ABCDE1: to=<u@%s>, relay=mx.%s[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=5.7.1, status=bounced (host mx.%s[192.0.2.1] said: 554 5.7.1 Service unavailable; Client host [192.0.2.5] blocked using zen.spamhaus.org (in reply to RCPT TO command))\n",
			time.Now().Format(time.RFC3339), dom, dom, dom)
	}
	learned := func(dom string) bool {
		return s.Current().Engine().Decide(context.Background(), "u@"+dom).Reason == route.ReasonLearned
	}
	// The first alert goes at once; the next waits for the interval.
	refuse("a.mxd")
	testutil.Eventually(t, "the first alert at the webhook", func() bool { return len(received()) == 1 })
	refuse("b.mxd")
	testutil.Eventually(t, "b.mxd learned", func() bool { return learned("b.mxd") })
	if n := len(received()); n != 1 {
		t.Fatalf("%d alerts at the webhook before the interval, want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.Stop(ctx)
	stopped = true
	if ev := received(); len(ev) != 2 || ev[1].Fields["domain"] != "b.mxd" {
		t.Errorf("at the webhook when Stop returned: %+v, want the queued alert for b.mxd too", ev)
	}
}
