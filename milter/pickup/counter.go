package pickup

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Timeout bounds one question to policyd: past it the message goes on
// uncounted (cleanup waits on the milter, and pickup on cleanup).
const Timeout = time.Second

// Counter asks policyd to count the messages local accounts submit, and
// says which to hold. It fails open: when policyd cannot be asked in
// time, the message goes on uncounted, with a warning at most once a
// minute.
type Counter struct {
	client  *Client
	users   Users
	log     *zap.Logger
	timeout time.Duration

	unreachable, unwired, mismatched warning
}

// NewCounter returns a Counter asking policyd at addr ("host:port",
// "unix:/path" or "unix:@name": milter.policyd_listen, else
// policyd.policy_listen).
func NewCounter(addr string, log *zap.Logger) (*Counter, error) {
	cl, err := NewClient(addr)
	if err != nil {
		return nil, err
	}
	return &Counter{client: cl, log: log, timeout: Timeout}, nil
}

// Close closes the connections to policyd; a nil Counter is fine.
func (c *Counter) Close() {
	if c != nil {
		c.client.Close()
	}
}

// Message is what the milter saw of one message of cleanup (pickup,
// sendmail) by its end.
type Message struct {
	QueueID    string // the i macro
	Sender     string
	Recipients int
	Domains    []string
	// Header is the value of the message's first header when that is
	// Header ("" when it is not).
	Header string
}

// Outcome is what became of a message.
type Outcome struct {
	LocalUser string // "" when the message names none
	Counted   bool
	Held      string // the reason to hold it ("" = goes on)
}

// Count asks policyd about m and says whether to hold it.
func (c *Counter) Count(m *Message) Outcome {
	if m.Header == "" {
		c.unwired.add(c.log, "mail from cleanup (sendmail, pickup) without the "+Header+" header Postfix's header_checks add: "+
			"not counted against [[limits]]; add the header_checks line of README \"Sending limits that hold, not reject\"",
			zap.String("queue_id", m.QueueID))
		return Outcome{}
	}
	uid, id, ok := ParseHeader(m.Header)
	if !ok || id != m.QueueID {
		c.mismatched.add(c.log, "the first "+Header+" header is not Postfix's for this message (forged, or the header_checks line differs): not counted",
			zap.String("queue_id", m.QueueID), zap.String("header", m.Header))
		return Outcome{}
	}
	name := c.users.Name(uid)
	out := Outcome{LocalUser: name}
	if name == MailOwner {
		return out // requeued (postsuper -r): counted when it came in
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	start := time.Now()
	action, err := c.client.Ask(ctx, &Request{QueueID: m.QueueID, Sender: m.Sender, LocalUser: name,
		Recipients: m.Recipients, Domains: m.Domains})
	if err != nil {
		c.unreachable.add(c.log, "mxdetour-policyd not asked in time: mail of local accounts goes on uncounted",
			zap.String("policy", c.client.Addr()), zap.String("queue_id", m.QueueID), zap.String("local_user", name),
			zap.Duration("took", time.Since(start)), zap.Error(err))
		return out
	}
	out.Counted = true
	out.Held, _ = Refusal(action)
	return out
}

// warning logs a recurring problem at most once a minute, saying how many
// times it happened since the last line.
type warning struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

const warnEvery = time.Minute

func (w *warning) add(log *zap.Logger, msg string, fields ...zap.Field) {
	w.mu.Lock()
	now := time.Now()
	if !w.last.IsZero() && now.Sub(w.last) < warnEvery {
		w.suppressed++
		w.mu.Unlock()
		return
	}
	n := w.suppressed
	w.last, w.suppressed = now, 0
	w.mu.Unlock()
	if n > 0 {
		fields = append(fields, zap.Int("more_since_last_warning", n))
	}
	log.Warn(msg+" (logged at most once a minute)", fields...)
}
