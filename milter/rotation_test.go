package main

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/d--j/go-milter"
	"go.uber.org/zap/zaptest"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
	"github.com/mxdetour/mxdetour/milter/dkim"
	"github.com/mxdetour/mxdetour/milter/filter"
)

// TestRotationInDaemon: the milter signs with a new key only once its
// record resolves, then with both keys (the overlap), as wired by
// startRotation.
func TestRotationInDaemon(t *testing.T) {
	rotationInterval = 50 * time.Millisecond
	defer func() { rotationInterval = dkim.RotationCheckInterval }()
	dir := t.TempDir()
	var rows []config.DKIMKey
	txt := map[string]string{}
	for _, sel := range []string{"ed", "ed2"} {
		k, _ := dkim.GenerateKey("ed25519", 0)
		f := filepath.Join(dir, sel+".key")
		if err := dkim.WriteKeyFile(f, k); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, config.DKIMKey{Domain: "example.org", Selector: sel, KeyFile: f})
		txt[sel] = dkim.TXTRecord(k.Public())
	}
	srv := dnstest.New(t, dnstest.Zone{"ed._domainkey.example.org": {TXT: [][]string{{txt["ed"]}}}})
	srv.SetNegativeTTL(0) // so the new record is seen at the next check
	cfg := config.Default()
	cfg.DNS.Servers = []string{srv.Addr()}
	cfg.DNS.MinTTL.Duration = 0
	cfg.Milter.DKIM.Keys = rows
	state := filepath.Join(dir, "rotation.json")
	cfg.Milter.DKIM.RotationStateFile = state
	log := zaptest.NewLogger(t)
	st, err := buildState(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	f := filter.New(st, log)
	if err := startRotation(f, cfg, func() *dkim.Table { return st.Keys }, log); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ms := milter.NewServer(f.ServerOptions()...)
	go ms.Serve(ln)
	t.Cleanup(func() { ms.Close() })
	addr := ln.Addr().String()

	// The old key was seen published (and kept in the state file); the new one not yet.
	testutil.Eventually(t, "the old key's record seen", func() bool { b, _ := os.ReadFile(state); return len(b) > 0 })
	if n := signatures(t, addr); n != 1 {
		t.Errorf("new record not published: %d signatures, want 1 (the old key)", n)
	}
	srv.Set("ed2._domainkey.example.org", dnstest.Records{TXT: [][]string{{txt["ed2"]}}})
	testutil.Eventually(t, "signing with both keys", func() bool { return signatures(t, addr) == 2 })
}
