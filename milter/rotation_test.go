package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/d--j/go-milter"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/mxdetour/mxdetour/internal/lookup"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
	"github.com/mxdetour/mxdetour/milter/dkim"
	"github.com/mxdetour/mxdetour/milter/filter"
	"github.com/mxdetour/mxdetour/milter/server"
)

// TestRotationInDaemon: the milter signs with a new key only once its
// record resolves, then with both keys (the overlap), as wired by
// server.StartRotation.
func TestRotationInDaemon(t *testing.T) {
	const rotationInterval = 50 * time.Millisecond
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
	st, err := server.Check(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	f := filter.New(st, log)
	stop, err := server.StartRotation(f, cfg, func() *dkim.Table { return st.Keys }, rotationInterval, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
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

// TestAlternateRotation: with rotation_selectors = "alternate" a domain
// rotates between two fixed selectors, s1 and s2, so the CNAMEs a
// customer put under its own _domainkey (to the hoster's zone) never
// change: two rotations write s2, then s1 again over the retired key.
// The milter signs with a new key only once its record resolves
// (through the customer's CNAME, on a DNS server on loopback), and every
// message it signs verifies at once against what DNS then publishes.
func TestAlternateRotation(t *testing.T) {
	const rotationInterval = 20 * time.Millisecond
	dir := t.TempDir()
	keys := filepath.Join(dir, "dkim")
	os.Mkdir(keys, 0o700)
	const d = "customer.zz"
	target := func(sel string) string { return sel + "." + d + ".dkim.hoster.zz" }
	cnames := dnstest.Zone{}
	for _, sel := range []string{"s1", "s2"} {
		cnames[sel+"._domainkey."+d] = dnstest.Records{CNAME: target(sel)}
	}
	srv := dnstest.New(t, dnstest.Zone{})
	for n, r := range cnames {
		srv.Set(n, r)
	}
	srv.SetNegativeTTL(0)
	publish := func(out string) string { // the hoster publishes at the CNAME's target
		t.Helper()
		recs := records(out)
		if len(recs) != 1 {
			t.Fatalf("keygen printed %d records, want 1:\n%s", len(recs), out)
		}
		for name, v := range recs {
			sel, _, _ := strings.Cut(name, ".")
			if name != sel+"._domainkey."+d || cnames[name].CNAME == "" {
				t.Fatalf("keygen's record is for %s, not one of the two delegated names", name)
			}
			srv.Set(target(sel), dnstest.Records{TXT: [][]string{{v}}, TTL: 1})
			return sel
		}
		return ""
	}

	cfgPath := filepath.Join(dir, "mxdetour.toml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("[dns]\nservers = [%q]\nmin_ttl = \"1s\"\n[milter.dkim]\nkey_dir = %q\nrotation_selectors = \"alternate\"\nrotation_overlap = \"1s\"\nrotation_state_file = %q\n",
		srv.Addr(), keys, filepath.Join(dir, "rotation.json"))), 0o644)
	keygen := func(args ...string) (string, error) {
		out, err := exec.Command(bin, append([]string{"keygen", "-owner", ""}, args...)...).CombinedOutput()
		return string(out), err
	}
	out, err := keygen("-domain", d, "-selector", "s1", "-algorithm", "ed25519", "-dir", keys)
	if err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	publish(out)

	log := zaptest.NewLogger(t)
	var cur atomic.Pointer[filter.State]
	load := func() *filter.State {
		t.Helper()
		cfg, err := config.Load(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		st, err := server.Check(cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	cur.Store(load())
	cfg0, err := config.Load(cfgPath) // the rotation reads its settings once
	if err != nil {
		t.Fatal(err)
	}
	f := filter.New(cur.Load(), log)
	stop, err := server.StartRotation(f, cfg0, func() *dkim.Table { return cur.Load().Keys }, rotationInterval, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	reload := func() { st := load(); f.Swap(st); cur.Store(st) }
	addr := serveFilter(t, f)

	// signedWith sends a message and returns the selectors that signed
	// it; each signature must verify against DNS as it is now.
	signedWith := func() string {
		t.Helper()
		msg := sendFrom(t, addr, d)
		r, err := lookup.New(lookup.Options{Servers: []string{srv.Addr()}, Timeout: time.Second}, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		var sels []string
		for _, tags := range signatureTags(msg) {
			sels = append(sels, tags["s"])
		}
		if got := verified(t, r, msg); len(got) != len(sels) {
			t.Errorf("signed by %v, verified %d: a key signed before its record was published", sels, len(got))
		}
		slices.Sort(sels)
		return strings.Join(sels, " ")
	}
	// during checks that only sel signs for a while: several rotation
	// checks go by.
	during := func(want, what string) {
		t.Helper()
		for range 10 {
			if got := signedWith(); got != want {
				t.Fatalf("%s: signed with %q, want %q", what, got, want)
			}
			time.Sleep(rotationInterval)
		}
	}
	eventually := func(want, what string) {
		t.Helper()
		testutil.Eventually(t, what, func() bool { return signedWith() == want })
	}

	during("s1", "one key")
	for rotation, next := range []string{"s2", "s1"} {
		prev := map[string]string{"s1": "s2", "s2": "s1"}[next]
		out, err := keygen("-next", "-domain", d, "-config", cfgPath)
		if err != nil {
			t.Fatalf("rotation %d: keygen -next: %v\n%s", rotation+1, err, out)
		}
		if rotation == 1 && !strings.Contains(out, "replaces the retired key of s1") {
			t.Errorf("second rotation does not say it writes over s1:\n%s", out)
		}
		reload()
		during(prev, "new key "+next+" not yet published")
		if out, err := keygen("-next", "-domain", d, "-config", cfgPath); err == nil || !strings.Contains(out, "not published yet") {
			t.Errorf("keygen -next while %s is not published: %v\n%s", next, err, out)
		}
		if sel := publish(out); sel != next {
			t.Fatalf("rotation %d wrote %s, want %s", rotation+1, sel, next)
		}
		eventually("s1 s2", next+" published: both sign for the overlap")
		if out, err := keygen("-next", "-domain", d, "-config", cfgPath); err == nil || !strings.Contains(out, "still signs beside") {
			t.Errorf("keygen -next during the overlap: %v\n%s", err, out)
		}
		eventually(next, "the overlap over: "+next+" alone")
	}
}

// signatureTags returns the tags of each DKIM-Signature field of msg.
func signatureTags(msg []byte) []map[string]string {
	head, _, _ := strings.Cut(string(msg), "\r\n\r\n")
	var out []map[string]string
	head = strings.NewReplacer("\r\n\t", "\t", "\r\n ", " ").Replace(head) // unfold
	for _, f := range strings.Split(head, "\r\n") {
		name, v, ok := strings.Cut(f, ":")
		if !ok || !strings.EqualFold(name, "DKIM-Signature") {
			continue
		}
		tags := map[string]string{}
		for _, tv := range strings.Split(v, ";") {
			k, val, _ := strings.Cut(tv, "=")
			tags[strings.TrimSpace(k)] = strings.Join(strings.Fields(val), "")
		}
		out = append(out, tags)
	}
	return out
}
