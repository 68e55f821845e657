package admin

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/policyd/policy"
	"github.com/mxdetour/mxdetour/policyd/server"
)

func TestResolveKey(t *testing.T) {
	groups := []heldGroup{{Key: "sasl_username:alice"}, {Key: "sender:www@ours.test"}, {Key: "sender_domain:alice"},
		{Key: "local_user:www-data"}}
	for in, want := range map[string]string{
		"sasl_username:alice": "sasl_username:alice",
		"local_user:www-data": "local_user:www-data",
		"www-data":            "local_user:www-data",
		"local_user:":         "",
		"sasl_username:zoe":   "sasl_username:zoe", // nothing held: its windows can still be reset
		"www@ours.test":       "sender:www@ours.test",
		"alice":               "", // two keys have it
		"nobody":              "",
	} {
		got, err := resolveKey(in, groups)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("resolveKey(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// `holds counts` shows a key's live counts against each limit that counts
// it, asked of the running daemon (which counts nothing for it), and
// from the state file once the daemon is gone.
func TestHoldsCounts(t *testing.T) {
	srv := dnstest.New(t, dnstest.Zone{})
	dir := t.TempDir()
	cfg := config.Default()
	cfg.DNS.Servers = []string{srv.Addr()}
	cfg.Learn.Enabled = false
	cfg.Learn.StateFile = filepath.Join(dir, "state.json")
	hour := config.Duration{Duration: time.Hour}
	cfg.Limits = []config.Limit{
		{Key: "local_user", Max: 20, Window: hour, Action: "HOLD"},
		{Key: "sasl_username", Max: 100, Window: hour, Action: "HOLD", Raise: map[string]int{"local_user:alice": 200}},
		{Key: "sender", Max: 5, Window: hour, Action: "HOLD", Exempt: []string{"sender:alice@ours.test"}},
		{Key: "client_address", Max: 5, Window: hour, Action: "HOLD"},
	}
	d, err := server.Start(cfg, server.Options{Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			d.Stop(context.Background())
		}
	}()
	for i := range 7 {
		a := d.Responder().Policy(context.Background(), &policy.Request{Request: "smtpd_access_policy", ProtocolState: "END-OF-MESSAGE",
			Instance: fmt.Sprint("m", i), QueueID: fmt.Sprint("Q", i), LocalUser: "alice", Sender: "alice@ours.test", RecipientCount: 2})
		if a != "DUNNO" {
			t.Fatalf("message %d: %q", i, a)
		}
	}
	count := func(key string) (string, string, int) {
		var out, errs strings.Builder
		code := counts(cfg, key, false, &out, &errs)
		return out.String(), errs.String(), code
	}
	for range 2 { // asking twice counts nothing
		out, errs, code := count("local_user=alice")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		for _, want := range []string{"local_user:alice, as counted by the running mxdetour-policyd",
			"local_user limit", "14/20 in 1h", "sasl_username limit", "14/200 in 1h"} {
			if !strings.Contains(out, want) {
				t.Errorf("no %q in\n%s", want, out)
			}
		}
		if strings.Contains(out, "client_address") || strings.Contains(out, "sender limit") {
			t.Errorf("limits that do not count local_user:alice shown:\n%s", out)
		}
	}
	if out, _, _ := count("sender:Alice@ours.test"); !strings.Contains(out, "exempt") || !strings.Contains(out, "sasl_username limit") {
		t.Errorf("sender:alice: %s", out)
	}
	if _, errs, code := count("alice"); code != daemon.ExitConfig || !strings.Contains(errs, "KEY:VALUE") {
		t.Errorf("a bare value: exit %d, %s", code, errs)
	}
	d.Stop(context.Background())
	stopped = true
	old := saveWait
	saveWait = 200 * time.Millisecond
	defer func() { saveWait = old }()
	out, _, code := count("local_user:alice")
	if code != 0 || !strings.Contains(out, "the state file (no mxdetour-policyd answered") || !strings.Contains(out, "14/20 in 1h") {
		t.Errorf("with the daemon stopped: exit %d\n%s", code, out)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "limits.json.save-*")); len(left) > 0 {
		t.Errorf("save requests left behind: %v", left)
	}
}
