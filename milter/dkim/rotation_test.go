package dkim

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
)

func TestSelectorGenerations(t *testing.T) {
	for sel, want := range map[string]string{"mail": "mail2", "mail2": "mail3", "rsa2026": "rsa2027", "s9": "s10", "2024": "2025"} {
		if got := NextSelector(sel); got != want {
			t.Errorf("NextSelector(%q) = %q, want %q", sel, got, want)
		}
	}
	rk, ek := testKeys(t)
	mk := func(k *Key, sel string) *Key { c := *k; c.Selector = sel; return &c }
	keys := []*Key{mk(rk, "rsa3"), mk(ek, "ed"), mk(rk, "rsa2"), mk(ek, "ed2"), mk(rk, "mail")}
	var got [][]string
	for _, f := range Families(keys) {
		var s []string
		for _, k := range f {
			s = append(s, k.Selector)
		}
		got = append(got, s)
	}
	if diff := cmp.Diff([][]string{{"rsa2", "rsa3"}, {"ed", "ed2"}, {"mail"}}, got); diff != "" {
		t.Errorf("families (-want +got):\n%s", diff)
	}
}

func sels(ks []*Key) string {
	var s []string
	for _, k := range ks {
		s = append(s, k.Selector)
	}
	return strings.Join(s, " ")
}

// The milter moves from the old key to the new one only after the new
// record resolves, signs with both for the overlap, then with the new one
// alone; a restart keeps the clock; the doctor tells when the old record
// can go.
func TestRotation(t *testing.T) {
	_, ek := testKeys(t)
	next, _ := GenerateKey("ed25519", 0)
	old := &Key{Domain: "example.org", Selector: "ed", Signer: ek.Signer, Algorithm: "ed25519", Bits: 256}
	nw := &Key{Domain: "example.org", Selector: "ed2", Signer: next, Algorithm: "ed25519", Bits: 256}
	other, _ := GenerateKey("ed25519", 0)
	single := &Key{Domain: "example.org", Selector: "solo", Signer: other, Algorithm: "ed25519", Bits: 256}
	tbl := tableOf(old, nw, single)
	keys := tbl.For("example.org")

	srv := dnstest.New(t, dnstest.Zone{"ed._domainkey.example.org": {TXT: [][]string{{TXTRecord(old.Signer.Public())}}}})
	state := filepath.Join(t.TempDir(), "rotation.json")
	core, logs := observer.New(zap.InfoLevel)
	r := NewRotation(7*24*time.Hour, state, zap.New(core))
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return now }

	if got := sels(r.Signers(keys)); got != "ed solo" {
		t.Errorf("before any check: %q, want the old key (and the single one)", got)
	}
	r.Check(context.Background(), client(t, srv), tbl)
	if got := sels(r.Signers(keys)); got != "ed solo" {
		t.Errorf("new record not published: %q, want the old key", got)
	}
	if logs.FilterMessageSnippet("ed2._domainkey.example.org is not published yet").Len() != 1 {
		t.Errorf("no log line that the new key waits: %v", logs.All())
	}

	srv.Set("ed2._domainkey.example.org", dnstest.Records{TXT: [][]string{{TXTRecord(next.Public())}}})
	now = now.Add(time.Hour)
	r.Check(context.Background(), client(t, srv), tbl) // a fresh cache: the NXDOMAIN would be cached
	if got := sels(r.Signers(keys)); got != "ed ed2 solo" {
		t.Errorf("new record published: %q, want both", got)
	}
	until := now.Add(7 * 24 * time.Hour).Format(time.RFC3339)
	if logs.FilterMessageSnippet("the records of ed can go after that").FilterMessageSnippet(until).Len() != 1 {
		t.Errorf("no log line saying when the old record can go (%s): %v", until, logs.All())
	}

	// A restart reads when the new key was first seen.
	r2 := NewRotation(7*24*time.Hour, state, zap.NewNop())
	later := now.Add(7*24*time.Hour - time.Minute)
	r2.now = func() time.Time { return later }
	if got := sels(r2.Signers(keys)); got != "ed ed2 solo" {
		t.Errorf("after a restart within the overlap: %q", got)
	}
	ro, err := ReadRotation(7*24*time.Hour, state)
	if err != nil {
		t.Fatal(err)
	}
	fs := Doctor{Keys: tbl, Rotation: ro, Now: later}.Run(context.Background(), client(t, srv))
	if f := find(fs, "rotation"); f == nil || f.Status != OK || !strings.Contains(f.Message, "ed signs beside it until "+until) {
		t.Errorf("doctor within the overlap: %+v", f)
	}

	later = now.Add(7*24*time.Hour + time.Minute)
	if got := sels(r2.Signers(keys)); got != "ed2 solo" {
		t.Errorf("after the overlap: %q, want the new key alone", got)
	}
	fs = Doctor{Keys: tbl, Rotation: ro, Now: later}.Run(context.Background(), client(t, srv))
	if f := find(fs, "rotation"); f == nil || f.Status != Warning || !strings.Contains(f.Fix, "remove the TXT record of ed._domainkey.example.org") {
		t.Errorf("doctor after the overlap: %+v", f)
	}
	// The old record gone: the doctor does not call that critical.
	srv.Delete("ed._domainkey.example.org")
	fs = Doctor{Keys: tbl, Rotation: ro, Now: later}.Run(context.Background(), client(t, srv))
	if f := find(fs, "dkim"); f == nil || f.Subject != "ed._domainkey.example.org" || f.Status != OK {
		t.Errorf("retired key's record removed: %+v", f)
	}
}

// A nil rotation (none wired) signs with every key, as before.
func TestNoRotation(t *testing.T) {
	rk, ek := testKeys(t)
	var r *Rotation
	if got := sels(r.Signers([]*Key{rk, ek})); got != "rsa ed" {
		t.Errorf("%q", got)
	}
}

func find(fs []Finding, check string) *Finding {
	for i := range fs {
		if fs[i].Check == check {
			return &fs[i]
		}
	}
	return nil
}
