package respond

import (
	"context"
	"errors"
	"io"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/setup"
	"github.com/mxdetour/mxdetour/policyd/limits"
	"github.com/mxdetour/mxdetour/policyd/policy"
	"github.com/mxdetour/mxdetour/policyd/route"
	"github.com/mxdetour/mxdetour/policyd/socketmap"
)

func responder(t testing.TB, log *zap.Logger) *Responder { return limited(t, log, nil) }

// limited is a responder whose answers count for l.
func limited(t testing.TB, log *zap.Logger, l *limits.Limiter) *Responder {
	srv := dnstest.New(t, dnstest.Zone{
		"gmail.mxd":    {MX: []lookup.MX{{Host: "gmail-smtp-in.l.google.com", Pref: 5}}},
		"plain.mxd":    {MX: []lookup.MX{{Host: "mx.plain.mxd", Pref: 5}}},
		"nullmx.mxd":   {MX: []lookup.MX{{Host: ".", Pref: 0}}},
		"servfail.mxd": {MX: []lookup.MX{{Host: "mx.plain.mxd", Pref: 5}}},
	})
	srv.SetFault("servfail.mxd", dnstest.ServFail)
	cfg := config.Default()
	cfg.DNS.Servers = []string{srv.Addr()}
	cfg.DNS.ASNZone = ""
	cfg.Transports.Relay = "relay:[mx03.example.net]:587"
	r, err := lookup.New(setup.Lookup(cfg.DNS), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return New(Fixed(Setup{Engine: route.New(setup.Route(cfg), r, nil, nil), Timeout: 300 * time.Millisecond, Limits: l}), log)
}

func TestAnswers(t *testing.T) {
	r := responder(t, zap.NewNop())
	ctx := context.Background()
	for key, want := range map[string]string{
		"*":                 "NOTFOUND ",
		"user":              "NOTFOUND ",
		"a@GMAIL.mxd":       "OK relay:[mx03.example.net]:587",
		"a@plain.mxd":       "NOTFOUND ",
		"a@nullmx.mxd":      "NOTFOUND ",
		"a@servfail.mxd":    "TEMP DNS lookup failed for servfail.mxd",
		"a@sub.example.com": "OK error:5.1.2 sub.example.com is a reserved domain (RFC 2606) and does not receive mail",
	} {
		if got := r.Lookup(ctx, "transport", key).String(); got != want {
			t.Errorf("socketmap %q = %q, want %q", key, got, want)
		}
	}
	for rcpt, want := range map[string]string{
		"a@gmail.mxd":   "FILTER relay:[mx03.example.net]:587",
		"a@plain.mxd":   "DUNNO",
		"a@example.com": "DUNNO",
	} {
		if got := r.Policy(ctx, &policy.Request{ProtocolState: "RCPT", Recipient: rcpt}); got != want {
			t.Errorf("policy %q = %q, want %q", rcpt, got, want)
		}
	}
	if got := r.Policy(ctx, &policy.Request{ProtocolState: "DATA", Recipient: "a@gmail.mxd"}); got != "DUNNO" {
		t.Errorf("DATA stage: %q", got)
	}
	if r.Stats().Decisions.Load() != 8 || r.Stats().Rejected.Load() != 2 || r.Stats().DNSFailures.Load() != 1 || r.Stats().Temp.Load() != 1 {
		t.Errorf("stats: decisions %d rejected %d dns failures %d temp %d", r.Stats().Decisions.Load(), r.Stats().Rejected.Load(), r.Stats().DNSFailures.Load(), r.Stats().Temp.Load())
	}
	if SocketmapReply(route.Decision{Temporary: true, Domain: "x"}) != socketmap.Temp("DNS lookup failed for x") {
		t.Error("TEMP reply")
	}
}

// A TEMP answer is logged as TEMP, not as the route it fell back to, and
// every decision DNS failure made is a WARN; the policy protocol, which
// cannot answer TEMP, logs the route it did answer. Each line carries the
// exact answer Postfix got; policy lines also the queue id, sender and
// client that Postfix sent, socketmap lines (which have none) omit them.
func TestDNSFailureLogged(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	r := responder(t, zap.New(eager{core}))
	ctx := context.Background()
	r.Lookup(ctx, "transport", "a@servfail.mxd")
	r.Policy(ctx, &policy.Request{ProtocolState: "RCPT", Recipient: "b@servfail.mxd", QueueID: "4QxY1",
		Sender: "s@ours.mxd", ClientAddress: "192.0.2.7"})
	r.Lookup(ctx, "transport", "c@plain.mxd")
	r.Lookup(ctx, "transport", "d@gmail.mxd")
	r.Policy(ctx, &policy.Request{ProtocolState: "RCPT", Recipient: "e@gmail.mxd", Sender: "", ClientAddress: "2001:db8::1"})
	type line struct{ Level, Proto, QueueID, Recipient, Sender, Client, Route, Answer, Provider, Reason string }
	var got []line
	str := func(f map[string]any, k string) string {
		if v, ok := f[k]; ok {
			return v.(string)
		}
		return "<none>"
	}
	for _, e := range logs.All() {
		f := e.ContextMap()
		got = append(got, line{e.Level.String(), str(f, "proto"), str(f, "queue_id"), str(f, "recipient"), str(f, "sender"),
			str(f, "client"), str(f, "route"), str(f, "answer"), str(f, "provider"), str(f, "reason")})
	}
	want := []line{
		{"warn", "socketmap", "<none>", "a@servfail.mxd", "<none>", "<none>", "TEMP", "TEMP DNS lookup failed for servfail.mxd", "", "dns-failure"},
		{"warn", "policy", "4QxY1", "b@servfail.mxd", "s@ours.mxd", "192.0.2.7", "direct", "DUNNO", "", "dns-failure"},
		{"info", "socketmap", "<none>", "c@plain.mxd", "<none>", "<none>", "direct", "NOTFOUND", "default", "provider-not-listed"},
		{"info", "socketmap", "<none>", "d@gmail.mxd", "<none>", "<none>", "relay", "OK relay:[mx03.example.net]:587", "google", "provider"},
		{"info", "policy", "", "e@gmail.mxd", "", "2001:db8::1", "relay", "FILTER relay:[mx03.example.net]:587", "google", "provider"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decision log lines (-want +got):\n%s", diff)
	}
	if n := r.Stats().DNSFailures.Load(); n != 2 {
		t.Errorf("DNS failures counted %d, want 2", n)
	}
	if n := r.Stats().Temp.Load(); n != 1 {
		t.Errorf("TEMP answers counted %d, want 1", n)
	}
}

func BenchmarkLookupCached(b *testing.B) {
	enc := zap.NewProductionEncoderConfig()
	log := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(io.Discard), zap.InfoLevel))
	r := responder(b, log)
	ctx := context.Background()
	for i := range 100 {
		r.Lookup(ctx, "transport", "warm@d"+strconv.Itoa(i)+".gmail.mxd")
	}
	b.ReportAllocs()
	for b.Loop() {
		r.Lookup(ctx, "transport", "someone@gmail.mxd")
	}
}

// With limits, a HOLD wins over the route; policy_context=limits never
// routes; a provider limit counts by the route's provider; reserved
// recipients are not counted.
func TestPolicyLimits(t *testing.T) {
	l := limits.New(limits.Options{Limits: []limits.Limit{
		{Key: limits.KeySASL, Max: 2, Window: time.Hour, Provider: "google", Action: limits.Hold},
	}}, limits.NewMemory(), nil, zap.NewNop())
	r := limited(t, zap.NewNop(), l)
	ctx := context.Background()
	ask := func(inst, rcpt, pctx string) string {
		return r.Policy(ctx, &policy.Request{Request: "smtpd_access_policy", ProtocolState: "RCPT", Instance: inst,
			Recipient: rcpt, SASLUsername: "alice", ClientAddress: "192.0.2.1", Sender: "alice@ours.mxd", PolicyContext: pctx})
	}
	got := []string{
		ask("1", "a@gmail.mxd", ""),         // routed, counted 1
		ask("1", "b@plain.mxd", "limits"),   // not google: not counted; never routed
		ask("1", "c@example.com", "limits"), // reserved: not counted
		ask("2", "d@gmail.mxd", "limits"),   // counted 2
		ask("3", "e@gmail.mxd", ""),         // 3/2: held, not routed
	}
	want := []string{"FILTER relay:[mx03.example.net]:587", "DUNNO", "DUNNO", "DUNNO",
		"HOLD mxdetour: sasl_username limit for google exceeded (3/2 in 1h)"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// mxdetour-milter's request for a local account's message (sendmail,
// pickup) reaches the limits with its account and destinations: counted
// under local_user:NAME, held past the limit, never routed.
func TestPolicyLocalUser(t *testing.T) {
	l := limits.New(limits.Options{Limits: []limits.Limit{
		{Key: limits.KeyLocalUser, Max: 3, Window: time.Hour, Action: limits.Defer},
	}}, limits.NewMemory(), nil, zap.NewNop())
	r := limited(t, zap.NewNop(), l)
	ask := func(id string, n int) string {
		return r.Policy(context.Background(), &policy.Request{Request: "smtpd_access_policy", ProtocolState: "END-OF-MESSAGE",
			Instance: "mxdetour-milter." + id, QueueID: id, RecipientCount: n, Sender: "wp@ours.mxd", PolicyContext: "limits",
			LocalUser: "www-data", RecipientDomains: "gmail.mxd"})
	}
	got := []string{ask("Q1", 2), ask("Q2", 1), ask("Q3", 1)}
	want := []string{"DUNNO", "DUNNO", "HOLD mxdetour: local_user limit exceeded (4/3 in 1h)"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if h := l.Held(); len(h) != 1 || h[0].Key != "local_user:www-data" || h[0].QueueID != "Q3" {
		t.Errorf("held: %+v", h)
	}
}

// eager hands the observer the values of an entry's fields, read as Write
// is called: the decision line is only valid until then (zap's encoders
// read it there; the observer keeps fields to read later).
type eager struct{ zapcore.Core }

func (e eager) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if e.Enabled(ent.Level) {
		return ce.AddCore(ent, e)
	}
	return ce
}

func (e eager) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	m := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(m)
	}
	values := make([]zapcore.Field, 0, len(m.Fields))
	for k, v := range m.Fields {
		values = append(values, zap.Any(k, v))
	}
	return e.Core.Write(ent, values)
}

// keeper is a resolver that keeps the context of every MX lookup, as a
// goroutine that outlives its request would.
type keeper struct {
	lookup.Resolver
	mu   sync.Mutex
	kept []context.Context
}

func (k *keeper) MX(ctx context.Context, domain string) lookup.Result {
	k.mu.Lock()
	k.kept = append(k.kept, ctx)
	k.mu.Unlock()
	return k.Resolver.MX(ctx, domain)
}

// TestKeptContextEnds: a decision's context kept past its answer is
// ended (Err, Done) and is not the context of the next decision, so
// nothing that keeps one can act for a later request.
func TestKeptContextEnds(t *testing.T) {
	zone := dnstest.Zone{}
	for i := range 4 {
		zone["d"+strconv.Itoa(i)+".mxd"] = dnstest.Records{MX: []lookup.MX{{Host: "mx.plain.mxd", Pref: 5}}}
	}
	srv := dnstest.New(t, zone)
	cfg := config.Default()
	cfg.DNS.Servers = []string{srv.Addr()}
	cfg.DNS.ASNZone = ""
	cl, err := lookup.New(setup.Lookup(cfg.DNS), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	k := &keeper{Resolver: cl}
	r := New(Fixed(Setup{Engine: route.New(setup.Route(cfg), k, nil, nil), Timeout: time.Minute}), zap.NewNop())
	for i := range 2 {
		r.Lookup(context.Background(), "transport", "a@d"+strconv.Itoa(2*i)+".mxd")
		r.Policy(context.Background(), &policy.Request{ProtocolState: "RCPT", Recipient: "b@d" + strconv.Itoa(2*i+1) + ".mxd"})
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.kept) < 4 {
		t.Fatalf("%d lookups seen", len(k.kept))
	}
	seen := map[context.Context]bool{}
	for i, ctx := range k.kept {
		if seen[ctx] {
			t.Errorf("lookup %d: the context of an earlier decision again", i)
		}
		seen[ctx] = true
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Errorf("lookup %d: kept context: Err = %v, want Canceled", i, ctx.Err())
		}
		select {
		case <-ctx.Done():
		default:
			t.Errorf("lookup %d: kept context not Done", i)
		}
	}
}
