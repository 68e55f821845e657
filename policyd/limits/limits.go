// Package limits brakes outbound abuse before it gets our addresses
// listed: per-sender limits on recipients in sliding windows, answered in
// Postfix's policy delegation protocol (SMTPD_POLICY_README) with HOLD —
// the message waits in the hold queue for the postmaster, nothing is lost
// and the client is not told to retry — or, where configured, DEFER
// (450 4.7.1) or REJECT (550 5.7.1); and a compromise signal, one SASL
// login used from too many countries or client networks.
//
// Only outbound mail is limited: requests of SASL-authenticated clients,
// of clients in the trusted networks (web scripts, webmail), which,
// having no login, are keyed by their sender, and of local accounts: mail
// submitted with the sendmail command (PHP's mail(), cron), which passes
// Postfix's pickup, never smtpd, and which mxdetour-milter asks about on
// the policy socket with the account (Request.LocalUser). Mail coming in
// from the world is never counted, so no one can exhaust a local user's
// limit by forging their address.
//
// Counting is per recipient, at the stage Postfix knows it (see Check).
// The counters live in a Store (Memory here, saved in a state file of
// their own; a store shared by a fleet can replace it).
package limits

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/alert"
	"github.com/mxdetour/mxdetour/internal/geo"
)

// KeyType says whom a limit counts.
type KeyType string

// The keys of [[limits]].
const (
	KeySASL         KeyType = "sasl_username"
	KeySender       KeyType = "sender"
	KeyClient       KeyType = "client_address"
	KeySenderDomain KeyType = "sender_domain"
	// KeyLocalUser is the local account that submitted a message with the
	// sendmail command; only mxdetour-milter's requests name one.
	KeyLocalUser KeyType = "local_user"
)

var keyTypes = [...]KeyType{KeySASL, KeySender, KeyClient, KeySenderDomain, KeyLocalUser}

// IsSubject tells whether s names a subject as the limits write it,
// "KEY:VALUE" with a known key type and a value ("local_user:alice").
func IsSubject(s string) bool {
	k, v, ok := strings.Cut(s, ":")
	return ok && v != "" && slices.Contains(keyTypes[:], KeyType(k))
}

// Action is what Postfix is told for a message over a limit.
type Action string

// The actions of [[limits]].
const (
	Hold   Action = "HOLD"
	Defer  Action = "DEFER"
	Reject Action = "REJECT"
)

// severity orders actions: when several limits refuse, the strongest wins.
func (a Action) severity() int {
	switch a {
	case Reject:
		return 3
	case Defer:
		return 2
	}
	return 1
}

// Limit is one [[limits]] entry.
type Limit struct {
	Key      KeyType
	Max      int           // recipients in Window
	Window   time.Duration // sliding
	Provider string        // count only recipients at this provider (route's classification); "" = all
	Action   Action
	// Exempt names subjects this limit does not count ("local_user:newsletter");
	// Raise gives subjects a Max of their own ("sasl_username:bulk": 1000).
	// A subject is written as the limits name it (IsSubject); for a
	// sasl_username limit, that is the sender or the local account of mail
	// without a login.
	Exempt []string
	Raise  map[string]int

	id     string              // ID(), computed once by Configure (the hot path)
	exempt map[string]struct{} // Exempt as a set, by Configure
}

// maxFor is the limit's Max for subject s, and whether it counts s at all.
func (l *Limit) maxFor(s string) (int, bool) {
	if len(l.exempt) > 0 {
		if _, ok := l.exempt[s]; ok {
			return 0, false
		}
	}
	if len(l.Raise) > 0 {
		if m, ok := l.Raise[s]; ok {
			return m, true
		}
	}
	return l.Max, true
}

// ID names the limit's counters. Max and Action are not in it: changing
// them keeps the counts; changing the key, provider or window starts anew.
func (l Limit) ID() string {
	if l.id != "" {
		return l.id
	}
	p := l.Provider
	if p == "" {
		p = "*"
	}
	return string(l.Key) + "/" + p + "/" + l.Window.String()
}

// Name is the limit as the postmaster and Postfix's log read it.
func (l Limit) Name() string {
	if l.Provider != "" {
		return string(l.Key) + " limit for " + l.Provider
	}
	return string(l.Key) + " limit"
}

// Compromise is the compromise signal: a SASL login used from more than
// MaxCountries countries or MaxClients client networks (/24, /48) within
// Window is held. A zero Window turns it off; MaxCountries needs a country
// source.
type Compromise struct {
	MaxCountries int
	MaxClients   int
	Window       time.Duration
}

// Options are what the configuration decides; Configure swaps them.
type Options struct {
	Limits     []Limit
	Compromise Compromise
	Failures   Failures       // the failure-ratio signal (failures.go)
	Trusted    []netip.Prefix // clients whose mail is ours without a login
	Geo        geo.Source     // country of a client; nil = no country check
	GeoTimeout time.Duration  // per country lookup (default 200ms)
}

// Notifier is told of limits exceeded; *alert.Alerter is one.
type Notifier interface{ Notify(alert.Event) }

// Request is what Check needs of a policy delegation request.
type Request struct {
	Stage          string // protocol_state: RCPT, DATA, END-OF-MESSAGE; others are not counted
	Instance       string // one per mail transaction
	QueueID        string // empty at the first RCPT
	Sender         string
	Recipient      string
	RecipientCount int // accepted recipients, at DATA and END-OF-MESSAGE
	ClientAddress  string
	SASLUsername   string
	Provider       string // the route engine's provider of Recipient ("" = none known)
	Refused        bool   // the recipient is refused anyway (reserved domain): do not count it
	// LocalUser is the local account that submitted the message with the
	// sendmail command (mxdetour-milter's requests, at END-OF-MESSAGE
	// only); Destinations its recipients' domains, separated by spaces,
	// for the alert.
	LocalUser    string
	Destinations string
	// At is when the request came, if the caller read the clock already
	// (zero: the limiter reads it).
	At time.Time
}

// Limiter applies the limits. It is safe for concurrent use and lives
// across reloads: Configure swaps the options, the counters stay.
type Limiter struct {
	store  Store
	alerts Notifier
	log    *zap.Logger
	now    func() time.Time

	o        atomic.Pointer[Options]
	txns     txnTable
	profiles profileTable
	held     heldLog
	failures failureTable
	dirty    atomic.Bool // counters changed since the last save

	saveMu  sync.Mutex // one save at a time
	path    string     // state file; "" = none
	saveNow chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

// New returns a Limiter counting in store and telling alerts (may be nil).
func New(o Options, store Store, alerts Notifier, log *zap.Logger) *Limiter {
	l := &Limiter{store: store, alerts: alerts, log: log, now: time.Now, saveNow: make(chan struct{}, 1)}
	l.txns.init()
	l.profiles.init()
	l.held.init()
	l.failures.init()
	l.Configure(o)
	return l
}

// Configure replaces the options (SIGHUP).
func (l *Limiter) Configure(o Options) {
	if o.GeoTimeout <= 0 {
		o.GeoTimeout = 200 * time.Millisecond
	}
	o.Limits = slices.Clone(o.Limits)
	for i := range o.Limits {
		lim := &o.Limits[i]
		lim.id = ""
		lim.id = lim.ID()
		lim.exempt = nil
		for _, s := range lim.Exempt {
			if lim.exempt == nil {
				lim.exempt = map[string]struct{}{}
			}
			lim.exempt[s] = struct{}{}
		}
	}
	l.o.Store(&o)
}

// Active reports whether any limit or the compromise signal is on.
func (l *Limiter) Active() bool {
	o := l.o.Load()
	return len(o.Limits) > 0 || o.Compromise.Window > 0 || o.Failures.Window > 0
}

// verdict is a refusal: what Postfix is told and why.
type verdict struct {
	action       Action
	name         string // limit name
	count, max   int
	window       time.Duration
	subject, key string // who, and the store key that refused
}

// Text is the policy delegation action, e.g. "HOLD mxdetour: sasl_username
// limit exceeded (101/100 in 1h)".
func (v *verdict) Text() string {
	reason := fmt.Sprintf("mxdetour: %s exceeded (%d/%d in %s)", v.name, v.count, v.max, FormatWindow(v.window))
	switch v.action {
	case Defer:
		return "450 4.7.1 " + reason
	case Reject:
		return "550 5.7.1 " + reason
	}
	return "HOLD " + reason
}

// Check counts the request and returns the action for Postfix when a
// limit refuses it ("HOLD mxdetour: ...", "450 4.7.1 mxdetour: ...");
// ok is false when the request is within every limit. Check keeps r's
// strings, never r itself: the caller reuses it.
//
// A request naming a local account (mxdetour-milter's, for mail submitted
// with the sendmail command) is always held when refused: Postfix cannot
// defer such mail (pickup would retry it for ever) and its submitter is
// gone, so a limit's DEFER or REJECT is a HOLD there.
//
// Counting, per recipient, without counting one twice:
//   - at RCPT, each recipient counts 1 (a provider limit counts only
//     recipients the route engine put at its provider);
//   - at DATA and END-OF-MESSAGE, recipient_count is the number of
//     recipients Postfix accepted. The transaction (by instance, which
//     Postfix keeps for the whole transaction; the queue id is empty at
//     the first RCPT) remembers how many of its recipients were counted at
//     RCPT, and only the difference is counted: with both stages wired
//     each recipient counts once, with only the end-of-data stage wired
//     they all count there. A provider limit counts at RCPT only: at DATA
//     Postfix no longer says who the recipients are.
//   - recipients a limit refuses, and every recipient of a held message,
//     do not count: a limit lets Max recipients out per window, and a
//     released message is the postmaster's decision. So a sender over a
//     limit is held until its window drops under the limit again.
func (l *Limiter) Check(ctx context.Context, r *Request) (string, bool) {
	counting := r.Stage == "RCPT" || r.Stage == "DATA" || r.Stage == "END-OF-MESSAGE"
	o := l.o.Load()
	if !counting || (len(o.Limits) == 0 && o.Compromise.Window <= 0 && o.Failures.Window <= 0) {
		return "", false
	}
	client, _ := netip.ParseAddr(r.ClientAddress)
	trusted := r.SASLUsername == "" && r.LocalUser == "" && inPrefixes(o.Trusted, client)
	if r.SASLUsername == "" && r.LocalUser == "" && !trusted {
		return "", false // mail from the world: not ours to limit
	}
	now := r.At
	if now.IsZero() {
		now = l.now()
	}
	t := l.txns.get(r.Instance, now)
	if t != nil {
		t.mu.Lock()
		defer t.mu.Unlock()
		if r.Stage == "END-OF-MESSAGE" {
			defer l.txns.end(r.Instance)
		}
	}
	subj := subjects(r, trusted)
	if t != nil {
		t.reuse(&subj)
	}
	l.profiles.record(o, &subj, r, r.ClientAddress, now)
	if t != nil {
		t.keep(&subj)
	}
	l.noteSubmitter(o, t, r, &subj, now)
	if t != nil && t.held != nil {
		l.noteQueueID(t, r.QueueID, now)
		return t.held.Text(), true
	}
	v := l.compromised(ctx, o, t, r, client, &subj, now)
	if v == nil {
		v = l.failing(o, &subj, now)
	}
	if v == nil {
		v = l.count(o, t, r, &subj, now)
	}
	if v == nil {
		return "", false
	}
	if r.LocalUser != "" {
		v.action = Hold
	}
	l.dirty.Store(true)
	l.refused(o, v, t, r, now)
	return v.Text(), true
}

// refused records a verdict: a held or wholly refused message gives back
// what it counted; a hold is remembered for the rest of the transaction
// and, with its queue id, for `holds`; the first refusal of a key in a
// window is alerted.
func (l *Limiter) refused(o *Options, v *verdict, t *txn, r *Request, now time.Time) {
	wholeMessage := v.action == Hold || r.Stage != "RCPT"
	if t != nil && wholeMessage {
		t.giveBack(l.store)
	}
	if t != nil && v.action == Hold {
		t.held = v
		l.noteQueueID(t, r.QueueID, now)
	}
	if l.store.Once(v.key, v.window, now) {
		l.alert(v, r)
	}
	l.log.Warn("limit exceeded", zap.String("key", v.subject), zap.String("limit", v.name),
		zap.Int("count", v.count), zap.Int("max", v.max), zap.String("action", string(v.action)),
		zap.String("queue_id", r.QueueID), zap.String("instance", r.Instance))
}

// noteQueueID records a held transaction once its queue id is known (from
// its second RCPT, DATA or END-OF-MESSAGE on).
func (l *Limiter) noteQueueID(t *txn, queueID string, now time.Time) {
	if queueID == "" || t.queueID != "" {
		return
	}
	t.queueID = queueID
	l.held.add(Held{QueueID: queueID, Key: t.held.subject, Limit: t.held.name, Reason: t.held.Text(), At: now})
	l.dirty.Store(true)
	select { // `holds` should list it at once, and a crash not lose it
	case l.saveNow <- struct{}{}:
	default:
	}
}

// count takes the request's recipients from every limit that applies; on
// a refusal it gives back what the others took and returns the verdict of
// the strongest refusing limit.
func (l *Limiter) count(o *Options, t *txn, r *Request, subj *subjectSet, now time.Time) *verdict {
	n, rcpt := 0, r.Stage == "RCPT"
	switch {
	case rcpt && !r.Refused && r.Recipient != "":
		if t != nil && t.lastRcpt == r.Recipient {
			return nil // the same RCPT asked twice (two policy checks wired): counted once
		}
		n = 1
	case !rcpt && t != nil:
		n = r.RecipientCount - t.counted
	}
	if n <= 0 {
		return nil
	}
	var taken [8]taking
	took := taken[:0]
	var refusal *verdict
	for i := range o.Limits {
		lim := &o.Limits[i]
		if lim.Provider != "" && (!rcpt || lim.Provider != r.Provider) {
			continue
		}
		s := subj.of(lim.Key)
		if s == "" {
			continue
		}
		max, counted := lim.maxFor(s)
		if !counted {
			continue
		}
		key := t.key(lim.id, s)
		c, ok := l.store.Take(key, n, max, lim.Window, now)
		if ok {
			took = append(took, taking{key, n, lim.Window})
			continue
		}
		if refusal == nil || lim.Action.severity() > refusal.action.severity() {
			refusal = &verdict{action: lim.Action, name: lim.Name(), count: c, max: max, window: lim.Window, subject: s, key: key}
		}
	}
	if refusal != nil {
		for _, tk := range took {
			l.store.Give(tk.key, tk.n, tk.w, now)
		}
		return refusal
	}
	if len(took) > 0 {
		l.dirty.Store(true)
	}
	if t != nil {
		t.counted += n
		if rcpt {
			t.lastRcpt = r.Recipient
		}
		t.took(took, now)
	}
	return nil
}

// compromised is the compromise signal for a SASL login: the client
// network, and its country when a source is configured, join the login's
// sliding sets; more distinct ones than allowed hold the message. It runs
// once per transaction. A country that cannot be found is not counted
// (fail open).
func (l *Limiter) compromised(ctx context.Context, o *Options, t *txn, r *Request, client netip.Addr, subj *subjectSet, now time.Time) *verdict {
	c := o.Compromise
	if c.Window <= 0 || r.SASLUsername == "" || !client.IsValid() || (t != nil && t.loginSeen) {
		return nil
	}
	if t != nil {
		t.loginSeen = true
	}
	s := subj.of(KeySASL)
	l.dirty.Store(true)
	if c.MaxClients > 0 {
		key := compromiseKey("networks", c.Window, s)
		if n, _ := l.store.See(key, Network(client).String(), c.Window, now); n > c.MaxClients {
			return &verdict{action: Hold, name: "client networks per login", count: n, max: c.MaxClients, window: c.Window, subject: s, key: key}
		}
	}
	if o.Geo == nil || c.MaxCountries <= 0 {
		return nil
	}
	cc := l.country(ctx, o, client)
	if cc == "" {
		return nil
	}
	key := compromiseKey("countries", c.Window, s)
	if n, _ := l.store.See(key, cc, c.Window, now); n > c.MaxCountries {
		return &verdict{action: Hold, name: "countries per login", count: n, max: c.MaxCountries, window: c.Window, subject: s, key: key}
	}
	return nil
}

func compromiseKey(what string, w time.Duration, subject string) string {
	return "compromise/" + what + "/" + w.String() + "|" + subject
}

func (l *Limiter) country(ctx context.Context, o *Options, ip netip.Addr) string {
	ctx, cancel := context.WithTimeout(ctx, o.GeoTimeout)
	defer cancel()
	cc, err := o.Geo.Country(ctx, ip)
	if errors.Is(err, geo.ErrClosed) {
		// A reload replaced the source between loading o and asking:
		// ask the one in use.
		if now := l.o.Load(); now.Geo != nil && now.Geo != o.Geo {
			cc, err = now.Geo.Country(ctx, ip)
		}
	}
	if err != nil {
		l.log.Debug("country unknown", zap.Stringer("client", ip), zap.Error(err))
	}
	return cc
}

// alert tells the postmaster, once per key and window.
func (l *Limiter) alert(v *verdict, r *Request) {
	if l.alerts == nil {
		return
	}
	if strings.HasPrefix(v.key, "compromise/failures/") {
		l.alerts.Notify(l.failureAlert(v))
		return
	}
	p := l.profiles.snapshot(v.subject)
	kind := "limit"
	if strings.HasPrefix(v.key, "compromise/") {
		kind = "compromise"
	}
	verb := map[Action]string{Hold: "held", Defer: "deferred", Reject: "rejected"}[v.action]
	l.alerts.Notify(alert.Event{
		Kind: kind,
		Summary: fmt.Sprintf("%s exceeded the %s: %d/%d in %s; its mail is %s",
			v.subject, v.name, v.count, v.max, FormatWindow(v.window), verb),
		Fields: map[string]string{
			"key":          v.subject,
			"limit":        v.name,
			"count":        strconv.Itoa(v.count),
			"max":          strconv.Itoa(v.max),
			"window":       FormatWindow(v.window),
			"action":       string(v.action),
			"sender":       r.Sender,
			"destinations": p.destinations,
			"clients":      p.clients,
			"release":      "mxdetour-policyd holds release " + v.subject,
		},
	})
}

// FormatWindow writes a window as a person would: "1h", "90m" as "1h30m".
func FormatWindow(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Network is the client network a compromise signal counts: the /24 of
// an IPv4 address, the /48 of an IPv6 one.
func Network(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	bits := 48
	if ip.Is4() {
		bits = 24
	}
	p, _ := ip.Prefix(bits)
	return p
}

func inPrefixes(ps []netip.Prefix, ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap()
	for _, p := range ps {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Reset forgets everything counted for subject ("sasl_username:alice"):
// every limit's window, the compromise sets, its alert marks, its held
// records. `holds release` asks for it.
func (l *Limiter) Reset(subject string) {
	o := l.o.Load()
	for _, lim := range o.Limits {
		l.store.Reset(lim.ID() + "|" + subject)
	}
	if w := o.Compromise.Window; w > 0 {
		l.store.Reset(compromiseKey("networks", w, subject))
		l.store.Reset(compromiseKey("countries", w, subject))
	}
	if w := o.Failures.Window; w > 0 {
		l.store.Reset(compromiseKey("failures", w, subject))
	}
	l.profiles.forget(subject)
	l.held.forget(subject)
	l.failures.forget(subject)
	l.dirty.Store(true)
	l.log.Info("limits reset", zap.String("key", subject))
}
