// Package respond turns route decisions into what Postfix reads: a policy
// delegation action (SMTPD_POLICY_README) or a socketmap reply
// (socketmap_table(5)), within the decision deadline, with one log line per
// decision.
//
// Postfix has no fail-open for a socketmap: a TEMP reply, a timeout or a
// dead daemon makes it answer 451 4.3.0 at RCPT and defer queued mail. So
// every answer here comes within the deadline, and "direct" (NOTFOUND,
// DUNNO) is the answer whenever we are unsure — except when the recipient
// domain's DNS failed and the configuration asks for TEMP (the default,
// safe with contrib/postfix's wiring, where only the queue manager asks the
// socketmap and a TEMP defers the recipient until the next queue run).
// A decision that DNS failure made is logged at WARN and counted.
package respond

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/mxdetour/mxdetour/policyd/learn"
	"github.com/mxdetour/mxdetour/policyd/limits"
	"github.com/mxdetour/mxdetour/policyd/policy"
	"github.com/mxdetour/mxdetour/policyd/route"
	"github.com/mxdetour/mxdetour/policyd/socketmap"
)

// Responder answers both protocols by the Setup of the moment.
type Responder struct {
	setup      func() *Setup
	log        *zap.Logger
	stats      Stats
	observe    func(d route.Decision, took time.Duration) // metrics; nil when off
	okText     lastAnswer                                 // the last socketmap OK answer logged
	filterText lastAnswer                                 // the last FILTER answer
}

// Setup is what one configuration decides of the answers. A reload swaps
// it whole: a request reads it once, and is answered by one Setup from
// start to end.
type Setup struct {
	Engine  *route.Engine
	Timeout time.Duration       // the decision deadline
	Status  *learn.StatusFilter // the delivery status filter; nil: every status unchanged
	Limits  *limits.Limiter     // outbound limits; nil when off
}

// StatusMap is the socketmap name of the delivery status filter:
// smtp_delivery_status_filter = socketmap:...:status (learn.StatusFilter).
const StatusMap = "status"

// Observe registers f to be told of every decision and how long it took
// (metrics). Call it before serving.
func (r *Responder) Observe(f func(d route.Decision, took time.Duration)) { r.observe = f }

// Stats counts decisions since start.
type Stats struct {
	Decisions, Routed, Rejected, DryRun atomic.Uint64
	// Deferred counts permanent refusals of our address the status filter
	// made temporary.
	Deferred atomic.Uint64
	// DNSFailures and Deadline count decisions made without the DNS
	// answers they needed: the lookup failed, or did not come within the
	// decision deadline. Temp counts those answered TEMP on the socketmap.
	DNSFailures, Deadline, Temp atomic.Uint64
}

// New returns a Responder that answers each request by the Setup that
// setup returns then: the daemon's current one, which a reload replaces
// (one atomic load per request).
func New(setup func() *Setup, log *zap.Logger) *Responder {
	return &Responder{setup: setup, log: log}
}

// Fixed is the setup of a Responder that always answers by s (tests,
// tools).
func Fixed(s Setup) func() *Setup { return func() *Setup { return &s } }

// Stats returns the counters.
func (r *Responder) Stats() *Stats { return &r.stats }

// Policy answers a policy delegation request. Only RCPT-stage requests with
// a recipient are decided; everything else is DUNNO. A reserved domain is
// DUNNO too: the milter rejects it at RCPT with a proper text.
//
// With outbound limits, every request (RCPT, DATA, END-OF-MESSAGE) is also
// counted, and a limit's HOLD, DEFER or REJECT wins over the route: the
// message waits for the postmaster, and once released takes the route the
// socketmap gives it. Postfix asking with policy_context=limits (the limits
// wiring of contrib/postfix) is never answered a route, only a limit. So
// is mxdetour-milter, which asks the same way, at END-OF-MESSAGE, for
// mail submitted with the sendmail command (local_user=, see
// policy.Request).
func (r *Responder) Policy(ctx context.Context, req *policy.Request) string {
	s := scratches.Get().(*scratch)
	defer s.put()
	setup := r.setup()
	var d route.Decision
	var at time.Time // zero when nothing was decided
	action := "DUNNO"
	decided := req.ProtocolState == "RCPT" && req.Recipient != ""
	if decided {
		d, at = r.decide(setup, req.Recipient)
		if req.PolicyContext != LimitsOnly {
			action = r.policyAction(d)
		}
	}
	if l := setup.Limits; l != nil {
		s.lim = limits.Request{
			Stage: req.ProtocolState, Instance: req.Instance, QueueID: req.QueueID,
			Sender: req.Sender, Recipient: req.Recipient, RecipientCount: req.RecipientCount,
			ClientAddress: req.ClientAddress, SASLUsername: req.SASLUsername,
			LocalUser: req.LocalUser, Destinations: req.RecipientDomains, // the milter's, for sendmail's mail
			Provider: d.Provider, Refused: d.Route == route.Reject, At: at,
		}
		if a, limited := l.Check(ctx, &s.lim); limited {
			action = a
		}
	}
	if decided {
		r.logPolicy(s, req, d, action)
	}
	return action
}

// scratch is what answering one request needs besides its answer: the
// limits' view of it and its log line. Nothing keeps any of it once the
// answer is given (the limits keep the request's strings, not the
// request; zap's encoders read the log line before Write returns, so a
// core that keeps fields to read later, as zaptest/observer does, must
// read them in Write), so it serves the next request: at
// tens of thousands of requests a second, the garbage collector's work is
// a good part of the daemon's.
type scratch struct {
	lim    limits.Request
	line   decisionLine
	fields [1]zap.Field
}

var scratches = sync.Pool{New: func() any { return new(scratch) }}

// put clears s (it holds the request's strings) and keeps it for reuse.
func (s *scratch) put() {
	*s = scratch{}
	scratches.Put(s)
}

// write writes the decision line of s through ce.
func (s *scratch) write(ce *zapcore.CheckedEntry) {
	s.fields[0] = zap.Inline(&s.line)
	ce.Write(s.fields[:]...)
}

// LimitsOnly is the policy_context of a check_policy_service that counts
// for the outbound limits and never routes.
const LimitsOnly = "limits"

// Lookup answers a socketmap request. The key is the address exactly as
// Postfix has it (any case); the wildcard key "*" that trivial-rewrite asks
// for, and keys that are no mail address, are NOTFOUND.
func (r *Responder) Lookup(ctx context.Context, name, key string) socketmap.Reply {
	setup := r.setup()
	if name == StatusMap {
		return r.filterStatus(setup.Status, key)
	}
	if key == "*" || strings.IndexByte(key, '@') < 0 {
		return socketmap.NotFound()
	}
	s := scratches.Get().(*scratch)
	defer s.put()
	d, _ := r.decide(setup, key)
	reply := SocketmapReply(d)
	temp := d.Temporary
	if temp {
		r.stats.Temp.Add(1)
	}
	if ce := r.log.Check(level(d), "decision"); ce != nil {
		s.line.fill("socketmap", nil, key, loggedRoute(d, temp), r.answerText(reply), d)
		s.write(ce)
	}
	return reply
}

// filterStatus answers the delivery status filter: a permanent refusal
// of our address becomes temporary, everything else stays (NOTFOUND).
func (r *Responder) filterStatus(f *learn.StatusFilter, key string) socketmap.Reply {
	if f == nil {
		return socketmap.NotFound()
	}
	repl, v, ok := f.Filter(key)
	if !ok {
		return socketmap.NotFound()
	}
	r.stats.Deferred.Add(1)
	r.log.Warn("deferred, not bounced: the receiver refuses our address; the message waits for the route around it",
		zap.String("kind", v.Kind), zap.String("status", key))
	return socketmap.OK(repl)
}

// logPolicy writes the decision line of a policy request: what Postfix
// told us of the message (queue id once it has one, sender, client) and
// the action it was answered, a limit's included.
func (r *Responder) logPolicy(s *scratch, req *policy.Request, d route.Decision, action string) {
	if ce := r.log.Check(level(d), "decision"); ce != nil {
		s.line.fill("policy", req, req.Recipient, string(d.Route), action, d)
		s.write(ce)
	}
}

// decisionLine is the fields of a decision's log line, written straight
// into the encoder: eleven zap.Fields would be copied to the heap for
// every line (zap's own advice for hot paths).
type decisionLine struct {
	proto, recipient, route, answer, provider, reason string
	req                                               *policy.Request // policy only
	cached, dryRun                                    bool
}

func (l *decisionLine) fill(proto string, req *policy.Request, rcpt, route, answer string, d route.Decision) {
	*l = decisionLine{proto: proto, req: req, recipient: rcpt, route: route, answer: answer,
		provider: d.Provider, reason: string(d.Reason), cached: d.Cached, dryRun: d.DryRun}
}

func (l *decisionLine) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("proto", l.proto)
	if l.req != nil {
		enc.AddString("queue_id", l.req.QueueID)
	}
	enc.AddString("recipient", l.recipient)
	if l.req != nil {
		enc.AddString("sender", l.req.Sender)
		enc.AddString("client", l.req.ClientAddress)
	}
	enc.AddString("route", l.route)
	enc.AddString("answer", l.answer)
	enc.AddString("provider", l.provider)
	enc.AddString("reason", l.reason)
	enc.AddBool("cache_hit", l.cached)
	enc.AddBool("dry_run", l.dryRun)
	return nil
}

// answerText is the socketmap reply as Postfix reads it ("OK
// relay:[mx03.example.net]:587", "NOTFOUND"), built only when logged.
func (r *Responder) answerText(rep socketmap.Reply) string {
	if rep.Data == "" {
		return rep.Status
	}
	if rep.Status != "OK" {
		return rep.String()
	}
	return r.okText.text("OK ", rep.Data)
}

// lastAnswer keeps the last answer built for a transport ("OK " or
// "FILTER " and the transport): there are few transports, and the hot
// path (a cached decision to relay) then allocates nothing for it.
type lastAnswer struct{ p atomic.Pointer[answerFor] }

type answerFor struct{ transport, answer string }

func (l *lastAnswer) text(prefix, transport string) string {
	if last := l.p.Load(); last != nil && last.transport == transport {
		return last.answer
	}
	a := &answerFor{transport: transport, answer: prefix + transport}
	l.p.Store(a)
	return a.answer
}

// level is the decision line's: a route that DNS failure chose (or
// deferred) is worth a look, WARN.
func level(d route.Decision) zapcore.Level {
	if dnsFailed(d) {
		return zap.WarnLevel
	}
	return zap.InfoLevel
}

// decide decides by setup within its deadline, counts and observes; the
// caller logs, once it knows its answer. The servers' context carries no
// deadline of its own (they pass Background); ours is lazy.
func (r *Responder) decide(setup *Setup, rcpt string) (route.Decision, time.Time) {
	// The decision's context is its own, never pooled: whatever keeps it
	// past the answer (a lookup's goroutine, one day) finds it ended, not
	// running on behalf of a later request.
	dl := new(deadline)
	now := dl.start(setup.Timeout)
	d := setup.Engine.DecideAt(dl, rcpt, now)
	dl.stop()
	r.count(d)
	if r.observe != nil {
		r.observe(d, time.Since(now))
	}
	return d, now
}

// loggedRoute is the route as Postfix is told it: "TEMP" when the
// socketmap answers TEMP, whatever route the decision fell back to.
func loggedRoute(d route.Decision, temp bool) string {
	if temp {
		return "TEMP"
	}
	return string(d.Route)
}

// dnsFailed tells whether DNS failure, not the answers, made d.
func dnsFailed(d route.Decision) bool {
	return d.Reason == route.ReasonDNSFailure || d.Reason == route.ReasonDeadline
}

func (r *Responder) count(d route.Decision) {
	r.stats.Decisions.Add(1)
	switch {
	case d.Route == route.Reject:
		r.stats.Rejected.Add(1)
	case d.DryRun:
		r.stats.DryRun.Add(1)
	case d.Transport != "":
		r.stats.Routed.Add(1)
	}
	switch d.Reason {
	case route.ReasonDeadline:
		r.stats.Deadline.Add(1)
	case route.ReasonDNSFailure:
		r.stats.DNSFailures.Add(1)
	}
}

// policyAction is PolicyAction, with the last FILTER answer kept.
func (r *Responder) policyAction(d route.Decision) string {
	if t := filtered(d); t != "" {
		return r.filterText.text("FILTER ", t)
	}
	return "DUNNO"
}

// PolicyAction is the policy delegation answer for d: FILTER for a routed
// recipient, DUNNO otherwise (reserved and null-MX domains included: the
// policy service cannot bounce one recipient of a message).
func PolicyAction(d route.Decision) string {
	if t := filtered(d); t != "" {
		return "FILTER " + t
	}
	return "DUNNO"
}

// filtered is the transport a routed recipient is FILTERed to, or "".
func filtered(d route.Decision) string {
	if d.Route == route.Relay || d.Route == route.IPv4 {
		return d.Transport
	}
	return ""
}

// SocketmapReply is the transport_maps answer for d.
func SocketmapReply(d route.Decision) socketmap.Reply {
	switch {
	case d.Temporary:
		return socketmap.Temp("DNS lookup failed for " + d.Domain)
	case d.Transport != "":
		return socketmap.OK(d.Transport)
	}
	return socketmap.NotFound()
}
