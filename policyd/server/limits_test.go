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

// The limiter lives across reloads: a reload applies new limits to the
// counts so far, and stopping saves them beside learn's state file.
func TestLimitsAcrossReload(t *testing.T) {
	srv := dnstest.New(t, zone())
	dir := t.TempDir()
	cfg := config.Default()
	cfg.DNS.Servers = []string{srv.Addr()}
	cfg.Learn.Enabled = false
	cfg.Learn.StateFile = filepath.Join(dir, "state.json")
	cfg.Limits = []config.Limit{{Key: "sasl_username", Max: 10, Window: config.Duration{Duration: time.Hour}, Action: "HOLD"}}
	d, err := server.Start(cfg, server.Options{Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ask := func(i int) string {
		return d.Responder().Policy(context.Background(), &policy.Request{Request: "smtpd_access_policy", ProtocolState: "RCPT",
			Instance: fmt.Sprint(i), SASLUsername: "alice", ClientAddress: "192.0.2.1", Recipient: fmt.Sprintf("r%d@plain.mxd", i)})
	}
	for i := range 3 {
		if a := ask(i); a != "DUNNO" {
			t.Fatalf("request %d: %q", i, a)
		}
	}
	next := *cfg
	next.Limits = []config.Limit{{Key: "sasl_username", Max: 3, Window: config.Duration{Duration: time.Hour}, Action: "HOLD"}}
	if err := d.Reload(context.Background(), &next); err != nil {
		t.Fatal(err)
	}
	if a := ask(3); a != "HOLD mxdetour: sasl_username limit exceeded (4/3 in 1h)" {
		t.Errorf("after the reload: %q", a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d.Stop(ctx)
	data, err := os.ReadFile(filepath.Join(dir, "limits.json"))
	if err != nil || !strings.Contains(string(data), "sasl_username:alice") {
		t.Errorf("limits.json after stop (%v): %s", err, data)
	}
}
