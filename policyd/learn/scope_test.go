package learn

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/mxdetour/mxdetour/policyd/block"
)

// wide is a provider-wide block of provider p learned from dom.
func wide(dom, p, route string, learned time.Time) Block {
	return Block{Domain: dom, MXHost: "mx." + dom, Provider: p, Scope: block.ScopeProvider, Kind: "microsoft-S3150",
		Route: route, Learned: learned, Expires: learned.Add(time.Hour)}
}

// A provider-wide block applies to every destination of its provider
// (LookupProvider), besides its own domain and MX host; a block of one
// destination does not; the relay wins over IPv4; expired, forgotten and
// other providers' blocks do not count.
func TestStoreProviderWide(t *testing.T) {
	now := time.Now()
	s := newStore(t, filepath.Join(t.TempDir(), "state.json"))
	s.Add(Block{Domain: "narrow.example", MXHost: "narrow.mail.protection.outlook.com", Provider: "microsoft",
		Kind: "dnsbl:zen.spamhaus.org", Route: block.RouteRelay, Learned: now, Expires: now.Add(time.Hour)})
	if b, ok := s.LookupProvider("microsoft", now); ok {
		t.Fatalf("a block of one destination applies to the provider: %+v", b)
	}
	s.Add(wide("a.example", "microsoft", block.RouteIPv4, now))
	if b, ok := s.LookupProvider("microsoft", now); !ok || b.Domain != "a.example" || !b.IPv6Only() {
		t.Fatalf("IPv6 provider-wide block: %+v %v", b, ok)
	}
	s.Add(wide("b.example", "microsoft", block.RouteRelay, now))
	if b, ok := s.LookupProvider("microsoft", now); !ok || b.Domain != "b.example" || b.IPv6Only() {
		t.Fatalf("the relay does not win: %+v %v", b, ok)
	}
	if b, ok := s.Lookup("b.example", nil, now); !ok || !b.ProviderWide() {
		t.Errorf("the provider-wide block does not apply to its own domain: %+v %v", b, ok)
	}
	for _, p := range []string{"google", ""} {
		if b, ok := s.LookupProvider(p, now); ok {
			t.Errorf("provider %q: %+v", p, b)
		}
	}
	if _, ok := s.LookupProvider("microsoft", now.Add(2*time.Hour)); ok {
		t.Error("an expired provider-wide block applies")
	}
	if diff := cmp.Diff([]string{"a.example", "b.example", "narrow.example"}, s.Domains("microsoft", now)); diff != "" {
		t.Errorf("Domains (-want +got):\n%s", diff)
	}
	s.Forget("b.example")
	if b, ok := s.LookupProvider("microsoft", now); !ok || b.Domain != "a.example" {
		t.Errorf("after forgetting b.example: %+v %v", b, ok)
	}
	s.Forget("a.example")
	if b, ok := s.LookupProvider("microsoft", now); ok {
		t.Errorf("a forgotten provider-wide block applies: %+v", b)
	}
}

// One block per domain: a later provider-wide refusal makes a domain's
// block provider-wide; a later refusal of that destination only keeps it
// provider-wide (and described by the provider-wide refusal); a refusal
// that needs the relay where the provider-wide block needed only IPv4
// takes the domain to the relay without taking the whole provider there.
func TestStoreRescope(t *testing.T) {
	now := time.Now()
	s := newStore(t, filepath.Join(t.TempDir(), "state.json"))
	narrow := func(route string, at time.Time) Block {
		return Block{Domain: "a.example", MXHost: "mx.a.example", Provider: "microsoft", Kind: "dnsbl:x",
			Route: route, Reply: "narrow", Learned: at, Expires: at.Add(time.Hour)}
	}
	s.Add(narrow(block.RouteRelay, now))
	w := wide("a.example", "microsoft", block.RouteRelay, now.Add(time.Second))
	w.Reply = "wide"
	s.Add(w)
	if b, ok := s.LookupProvider("microsoft", now); !ok || b.Reply != "wide" {
		t.Fatalf("not made provider-wide: %+v %v", b, ok)
	}
	s.Add(narrow(block.RouteRelay, now.Add(2*time.Second)))
	if b, ok := s.LookupProvider("microsoft", now); !ok || b.Reply != "wide" || b.Kind != "microsoft-S3150" {
		t.Errorf("a refusal of one destination changed the provider-wide block: %+v %v", b, ok)
	}

	s.Add(wide("v6.example", "microsoft", block.RouteIPv4, now))
	s.Add(Block{Domain: "v6.example", MXHost: "mx.v6.example", Kind: "dnsbl:x", Route: block.RouteRelay, Learned: now.Add(time.Second), Expires: now.Add(time.Hour)})
	if b, ok := s.Lookup("v6.example", nil, now); !ok || b.IPv6Only() || b.ProviderWide() {
		t.Errorf("v6.example: %+v %v, want a relay block of the domain only", b, ok)
	}
	if b, ok := s.LookupProvider("microsoft", now); !ok || b.Domain != "a.example" {
		t.Errorf("provider-wide: %+v %v, want a.example's only", b, ok)
	}
}

// A state file written before scopes existed loads, with blocks of one
// destination; a provider-wide block survives a save and a restart.
func TestStateFileScope(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	now := time.Now().UTC()
	old := `{"version": 1, "offset": {}, "blocks": [
	  {"domain": "old.example", "mx_host": "tenant.mail.protection.outlook.com", "provider": "microsoft", "kind": "microsoft-S3150",
	   "route": "relay", "reply": "550 5.7.1 ... (S3150)", "learned": "` + now.Format(time.RFC3339) + `", "expires": "` + now.Add(time.Hour).Format(time.RFC3339) + `"}]}`
	if err := os.WriteFile(path, []byte(old), 0o640); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, path)
	if b, ok := s.Lookup("old.example", nil, now); !ok || b.ProviderWide() {
		t.Fatalf("old block: %+v %v", b, ok)
	}
	if _, ok := s.LookupProvider("microsoft", now); ok {
		t.Fatal("an old block became provider-wide")
	}
	s.Add(wide("new.example", "microsoft", block.RouteRelay, now))
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), `"scope": "provider"`) {
		t.Errorf("the state file does not say provider-wide:\n%s", data)
	}
	again := newStore(t, path)
	if b, ok := again.LookupProvider("microsoft", now); !ok || b.Domain != "new.example" {
		t.Errorf("after a restart: %+v %v", b, ok)
	}
}

// s3150 is Microsoft's S3150 refusal (classify_test.go) as tenant's MX
// host at addr logs it.
func s3150(at time.Time, id, dom, host, addr string) string {
	return fmt.Sprintf("%s mx1 postfix/smtp[1]: %s: to=<u@%s>, relay=%s[%s]:25, delay=1, delays=0/0/0/1, dsn=5.7.1, status=bounced (host %s[%s] said: 550 5.7.1 Unfortunately, messages from [192.0.2.5] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150). (in reply to MAIL FROM command))",
		at.Format(time.RFC3339), id, dom, host, addr, host, addr)
}

// The learner makes a provider-wide block of a provider-wide refusal from
// a host whose provider it recognises (by name or by address, ProviderOf),
// and a block of the one destination otherwise.
func TestLearnerScope(t *testing.T) {
	now := time.Now()
	c, _ := NewClassifier(nil, nil)
	s := newStore(t, filepath.Join(t.TempDir(), "state.json"))
	var asked []string
	providerOf := func(host string, addr netip.Addr) string {
		asked = append(asked, host+" "+addr.String())
		switch {
		case strings.HasSuffix(host, ".mail.protection.outlook.com"), addr == netip.MustParseAddr("198.51.100.7"):
			return "microsoft"
		}
		return ""
	}
	l := NewLearner(Options{BlockTTL: time.Hour, ProviderOf: providerOf}, c, s, zaptest.NewLogger(t))
	l.Handle(s3150(now, "1A2B3C4D5E", "a.example", "a-example.mail.protection.outlook.com", "52.101.1.2"), now)
	l.Handle(s3150(now, "1A2B3C4D5F", "byaddr.example", "mx.byaddr.example", "198.51.100.7"), now)
	l.Handle(s3150(now, "1A2B3C4D60", "unknown.example", "mx.unknown.example", "198.51.100.8"), now)
	l.Handle(strings.TrimSpace(ipv4Refusal(now, "1A2B3C4D61", "dnsbl.example")), now)
	got := map[string]string{}
	for _, b := range s.List(now) {
		got[b.Domain] = b.Provider + "/" + b.Scope
	}
	want := map[string]string{
		"a.example": "microsoft/provider", "byaddr.example": "microsoft/provider",
		"unknown.example": "/", "dnsbl.example": "/",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("provider/scope by domain (-want +got):\n%s", diff)
	}
	if len(asked) != 4 || asked[1] != "mx.byaddr.example 198.51.100.7" {
		t.Errorf("ProviderOf was asked %q", asked)
	}
}

// m365Auth is Microsoft's 5.7.515 (classify_test.go) for sender domain D.
func m365Auth(at time.Time, id, sender string) string {
	return fmt.Sprintf("%s mx1 postfix/smtp[1]: %s: to=<u@fabrikam.example>, relay=fabrikam-example.mail.protection.outlook.com[52.101.1.2]:25, delay=1, delays=0/0/0/1, dsn=5.7.515, status=bounced (host fabrikam-example.mail.protection.outlook.com[52.101.1.2] said: 550 5.7.515 Access denied, sending domain %s doesn't meet the required authentication level. (in reply to end of DATA command))",
		at.Format(time.RFC3339), id, sender)
}

// A refusal that is our own fault is logged at warning and told to
// OnOwnFault with what to fix; no block is learned; one older than the
// block lifetime is not told.
func TestLearnerOwnFault(t *testing.T) {
	now := time.Now()
	c, _ := NewClassifier(nil, nil)
	s := newStore(t, filepath.Join(t.TempDir(), "state.json"))
	log, logs := observed(t)
	var told []OwnFault
	l := NewLearner(Options{BlockTTL: time.Hour, OnOwnFault: func(f OwnFault) { told = append(told, f) }}, c, s, log)
	l.Handle(m365Auth(now, "1A2B3C4D70", "Example.ORG"), now)
	l.Handle(m365Auth(now.Add(-2*time.Hour), "1A2B3C4D71", "old.example"), now)
	if bs := s.List(now); len(bs) != 0 {
		t.Errorf("blocks learned from an own-fault refusal: %+v", bs)
	}
	if len(told) != 1 {
		t.Fatalf("OnOwnFault told %d times, want 1: %+v", len(told), told)
	}
	f := told[0]
	if f.Kind != "authentication" || f.Sender != "example.org" || f.Domain != "fabrikam.example" || f.QueueID != "1A2B3C4D70" ||
		f.Key() != "authentication example.org" {
		t.Errorf("told %+v (key %q)", f, f.Key())
	}
	for _, w := range []string{"publish SPF and DKIM for sender domain example.org", "mxdetour-milter doctor"} {
		if !strings.Contains(f.Fix(), w) {
			t.Errorf("fix %q lacks %q", f.Fix(), w)
		}
	}
	warned := logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("sender domain example.org").Len()
	if warned != 1 {
		t.Errorf("%d warnings naming example.org, want 1", warned)
	}
	e := OwnFaultEvent(f)
	if e.Kind != EventOwnFault || e.Fields["sender_domain"] != "example.org" || e.Fields["fix"] != f.Fix() || !strings.Contains(e.Summary, "example.org") {
		t.Errorf("event %+v", e)
	}
	ptr := OwnFault{Kind: "ptr", Client: netip.MustParseAddr("192.0.2.60"), Domain: "gmail.com"}
	if ptr.Key() != "ptr 192.0.2.60" || !strings.Contains(ptr.Fix(), "PTR record") {
		t.Errorf("ptr: key %q fix %q", ptr.Key(), ptr.Fix())
	}
}
