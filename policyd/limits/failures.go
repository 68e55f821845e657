package limits

// The failure-ratio signal: a compromised account or abused web form
// sends to harvested and guessed addresses, and most of that mail fails —
// unknown users (5.1.1), content refusals, deferrals — long before any
// count limit is reached. The learner reads every delivery result
// (Delivered); the policy requests name the account that submitted each
// message with its queue id (the smtpd login at its second RCPT, DATA or
// END-OF-MESSAGE; mxdetour-milter's pickup request for the sendmail
// command), which joins the two. When an account's results in the window
// fail at or above the ratio, with at least Min of them, its next
// messages are held like a limit's and the postmaster is alerted once per
// window with the figures and the top failing destinations.
//
// Refusals of our address (blocks: the learner's classifier says which)
// are ours, not the account's: they are not counted at all, so an account
// whose mail fails only because we are listed is never held for it.
//
// Everything here is per host and in memory: each host reads its own
// delivery log, and after a restart the figures start afresh.

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/alert"
)

// Failures configures the failure-ratio signal; a zero Window turns it
// off.
type Failures struct {
	Ratio  float64       // failed / counted results at or above which the account is held
	Min    int           // results counted in Window before the ratio means anything
	Window time.Duration // sliding
}

// Result is one delivery result of the delivery log (one recipient).
type Result struct {
	QueueID   string
	Recipient string
	Status    string // sent, deferred, bounced, expired, SOFTBOUNCE
	DSN       string // "5.1.1"
	At        time.Time
}

// Bounds: a join lives joinKeep (a message deferred longer is not counted
// any more), at most maxJoins of them (the oldest go first); an account
// keeps at most maxResults results, at most maxAccounts accounts (the one
// idle longest goes first).
const (
	joinKeep    = 24 * time.Hour
	maxJoins    = 50000
	maxResults  = 1000
	maxAccounts = 10000
	// MaxFailureMin bounds Failures.Min: an account keeps no more results.
	MaxFailureMin = maxResults
)

// failureTable joins queue ids to accounts and keeps each account's
// recent results.
type failureTable struct {
	mu       sync.Mutex
	joins    map[string]join
	order    []string // queue ids, oldest first, for eviction
	accounts map[string]*account
	flagged  atomic.Int32 // accounts held now: Check looks no further while 0
}

type join struct {
	account string
	at      time.Time
}

type account struct {
	results []result // oldest first
	held    bool
	last    time.Time
}

type result struct {
	at     time.Time
	id     string // queue id and recipient: a later result of a deferred recipient replaces its deferral
	failed bool
	class  string
	domain string
}

func (ft *failureTable) init() {
	ft.joins, ft.accounts = map[string]join{}, map[string]*account{}
}

// join records that account submitted the message queueID.
func (ft *failureTable) join(queueID, account string, now time.Time) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if _, ok := ft.joins[queueID]; ok {
		return
	}
	for len(ft.order) > 0 {
		old := ft.order[0]
		if j, ok := ft.joins[old]; ok && len(ft.order) < maxJoins && now.Sub(j.at) < joinKeep {
			break
		}
		delete(ft.joins, old)
		ft.order[0] = ""
		ft.order = ft.order[1:]
	}
	ft.joins[queueID] = join{account, now}
	ft.order = append(ft.order, queueID)
}

// classOf sorts a failed result for the alert.
func classOf(r *Result) string {
	switch {
	case r.Status == "deferred" || r.Status == "SOFTBOUNCE":
		return "deferred"
	case strings.HasPrefix(r.DSN, "5.1."):
		return "unknown recipient"
	case strings.HasPrefix(r.DSN, "5.7."):
		return "refused (content or policy)"
	}
	return "bounced"
}

// Delivered counts one delivery result against the account that
// submitted its message; ours tells whether a failure is a refusal of
// our address (called only for failures of joined messages). The
// learner calls it, one result at a time.
func (l *Limiter) Delivered(r Result, ours func() bool) {
	f := l.o.Load().Failures
	if f.Window <= 0 || r.QueueID == "" || r.Recipient == "" {
		return
	}
	now := l.now()
	at := r.At
	if at.IsZero() || at.After(now) {
		at = now
	}
	if now.Sub(at) >= f.Window {
		return
	}
	ft := &l.failures
	ft.mu.Lock()
	j, ok := ft.joins[r.QueueID]
	ft.mu.Unlock()
	if !ok || now.Sub(j.at) >= joinKeep {
		return
	}
	bad := r.Status != "sent"
	if bad && ours() {
		return // a block of our address: not the account's doing
	}
	res := result{at: at, id: r.QueueID + " " + r.Recipient, failed: bad}
	if bad {
		res.class = classOf(&r)
	}
	if i := strings.LastIndexByte(r.Recipient, '@'); i >= 0 {
		res.domain = strings.ToLower(r.Recipient[i+1:])
	}
	ft.mu.Lock()
	a := ft.account(j.account, now)
	a.add(res)
	was := a.held
	failed, total := ft.judge(a, &f, now)
	nowHeld := a.held && !was
	ft.mu.Unlock()
	if nowHeld {
		l.log.Warn("failure ratio reached: the account's next messages are held", zap.String("key", j.account),
			zap.Int("failed", failed), zap.Int("results", total), zap.Float64("ratio", f.Ratio), zap.Duration("window", f.Window))
	}
}

// account returns name's account, made (evicting the idlest when full).
func (ft *failureTable) account(name string, now time.Time) *account {
	a := ft.accounts[name]
	if a == nil {
		if len(ft.accounts) >= maxAccounts {
			var idlest string
			var last time.Time
			for n, b := range ft.accounts {
				if idlest == "" || b.last.Before(last) {
					idlest, last = n, b.last
				}
			}
			ft.drop(idlest)
		}
		a = &account{}
		ft.accounts[name] = a
	}
	a.last = now
	return a
}

func (ft *failureTable) drop(name string) {
	if a := ft.accounts[name]; a != nil && a.held {
		ft.flagged.Add(-1)
	}
	delete(ft.accounts, name)
}

// add records res, replacing an earlier result of the same recipient of
// the same message (a deferral, then its delivery or bounce).
func (a *account) add(res result) {
	for i := len(a.results) - 1; i >= 0; i-- {
		if a.results[i].id == res.id {
			res.at = a.results[i].at
			a.results[i] = res
			return
		}
	}
	if len(a.results) >= maxResults {
		a.results = slices.Delete(a.results, 0, 1)
	}
	a.results = append(a.results, res)
}

// figures drops the results that left the window and counts the rest.
func (a *account) figures(w time.Duration, now time.Time) (failed, total int) {
	i := 0
	for i < len(a.results) && now.Sub(a.results[i].at) >= w {
		i++
	}
	a.results = slices.Delete(a.results, 0, i)
	for _, r := range a.results {
		if r.failed {
			failed++
		}
	}
	return failed, len(a.results)
}

// judge holds or frees a: held while its window holds at least Min
// results and the failed ones reach Ratio.
func (ft *failureTable) judge(a *account, f *Failures, now time.Time) (failed, total int) {
	failed, total = a.figures(f.Window, now)
	held := total >= f.Min && total > 0 && float64(failed) >= f.Ratio*float64(total)
	if held != a.held {
		a.held = held
		if held {
			ft.flagged.Add(1)
		} else {
			ft.flagged.Add(-1)
		}
	}
	return failed, total
}

// failing is the signal's verdict for the request's account: a hold while
// the account's recent mail fails above the ratio.
func (l *Limiter) failing(o *Options, subj *subjectSet, now time.Time) *verdict {
	f := &o.Failures
	ft := &l.failures
	if f.Window <= 0 || ft.flagged.Load() == 0 {
		return nil
	}
	s := subj.of(KeySASL)
	ft.mu.Lock()
	defer ft.mu.Unlock()
	a := ft.accounts[s]
	if a == nil || !a.held {
		return nil
	}
	failed, total := ft.judge(a, f, now)
	if !a.held {
		return nil
	}
	return &verdict{action: Hold, name: "failure ratio (%)", count: failed * 100 / total, max: int(f.Ratio * 100),
		window: f.Window, subject: s, key: compromiseKey("failures", f.Window, s)}
}

// noteSubmitter joins the request's queue id to its account, once per
// transaction.
func (l *Limiter) noteSubmitter(o *Options, t *txn, r *Request, subj *subjectSet, now time.Time) {
	if o.Failures.Window <= 0 || r.QueueID == "" || (t != nil && t.joined) {
		return
	}
	if s := subj.of(KeySASL); s != "" {
		l.failures.join(r.QueueID, s, now)
		if t != nil {
			t.joined = true
		}
	}
}

// failureAlert is the alert of an account the signal held.
func (l *Limiter) failureAlert(v *verdict) alert.Event {
	f := l.o.Load().Failures
	now := l.now()
	ft := &l.failures
	ft.mu.Lock()
	var failed, total int
	classes, dests := map[string]int{}, map[string]int{}
	if a := ft.accounts[v.subject]; a != nil {
		failed, total = a.figures(f.Window, now)
		for _, r := range a.results {
			if r.failed {
				classes[r.class]++
				dests[r.domain]++
			}
		}
	}
	ft.mu.Unlock()
	return alert.Event{
		Kind: "compromise",
		Summary: fmt.Sprintf("%s: %d of its last %d delivery results in %s failed (%d%%, at or above %d%%): %s; its mail is held",
			v.subject, failed, total, FormatWindow(f.Window), failed*100/max(total, 1), int(f.Ratio*100), top(classes, 5)),
		Fields: map[string]string{
			"key":          v.subject,
			"limit":        "failure ratio",
			"failed":       strconv.Itoa(failed),
			"count":        strconv.Itoa(total),
			"ratio":        strconv.Itoa(failed*100/max(total, 1)) + "%",
			"max":          strconv.Itoa(int(f.Ratio*100)) + "%",
			"window":       FormatWindow(f.Window),
			"action":       string(Hold),
			"failures":     top(classes, 5),
			"destinations": top(dests, 5),
			"release":      "mxdetour-policyd holds release " + v.subject,
		},
	}
}

// top writes the n largest counts, "gmail.test (12), yahoo.test (3)".
func top(m map[string]int, n int) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Or(cmp.Compare(m[b], m[a]), cmp.Compare(a, b)) })
	var b strings.Builder
	for i, k := range names[:min(n, len(names))] {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (%d)", k, m[k])
	}
	return b.String()
}

// forget drops subject's results (`holds release`).
func (ft *failureTable) forget(subject string) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	ft.drop(subject)
}

// prune drops accounts with no result left in the window.
func (ft *failureTable) prune(f Failures, now time.Time) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	for name, a := range ft.accounts {
		if f.Window <= 0 {
			ft.drop(name)
			continue
		}
		if ft.judge(a, &f, now); len(a.results) == 0 {
			ft.drop(name)
		}
	}
}
