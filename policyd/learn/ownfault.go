package learn

import (
	"cmp"
	"fmt"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/alert"
	"github.com/mxdetour/mxdetour/internal/domain"
)

// EventOwnFault is the alert kind of a refusal that our own configuration
// causes.
const EventOwnFault = "own-fault"

// OwnFault is a refusal that is our own configuration's fault (a sender
// domain without working SPF or DKIM, our IPv4 address without a PTR
// record): a relay would not help, it would only hide the fault from
// the receivers that check. The learner logs each one at warning and
// tells Options.OnOwnFault.
type OwnFault struct {
	Kind    string     // "authentication" or "ptr" (Verdict.Kind)
	Sender  string     // the sender domain the reply names ("authentication"); "" when it names none
	Client  netip.Addr // our address as the reply quotes it, when it does
	Domain  string     // the recipient's domain
	MXHost  string     // the host that refused
	QueueID string
	Reply   string
	Time    time.Time
}

// Key is what one alert stands for: the kind, and the sender domain (for
// authentication) or our address (for reverse DNS), so that the
// postmaster hears once per interval of each thing to fix.
func (f OwnFault) Key() string {
	if f.Kind == "ptr" {
		return f.Kind + " " + f.Client.String()
	}
	return f.Kind + " " + f.Sender
}

// Summary says in one line what is wrong.
func (f OwnFault) Summary() string {
	if f.Kind == "ptr" {
		return fmt.Sprintf("%s refuses our address %s for its reverse DNS (PTR): our fault, not rerouted", f.Domain, f.address())
	}
	return fmt.Sprintf("%s refuses mail of sender domain %s as unauthenticated (SPF/DKIM/DMARC): our fault, not rerouted", f.Domain, f.sender())
}

// Fix says what to do about it.
func (f OwnFault) Fix() string {
	if f.Kind == "ptr" {
		return fmt.Sprintf("give %s a PTR record naming a host whose A record is %s again (forward-confirmed reverse DNS), "+
			"set by whoever runs the address block: Gmail and Microsoft refuse IPv4 mail without one", f.address(), f.address())
	}
	return fmt.Sprintf("publish SPF and DKIM for sender domain %s (mxdetour-milter signs with a key of that domain; "+
		"the DMARC record must align with them); run `mxdetour-milter doctor` to see what is missing", f.sender())
}

func (f OwnFault) sender() string {
	return cmp.Or(f.Sender, "(not named in the reply: see queue id "+f.QueueID+" in the mail log)")
}

func (f OwnFault) address() string {
	if f.Client.IsValid() {
		return f.Client.String()
	}
	return "(not named in the reply: the one we sent from)"
}

// OwnFaultEvent is the postmaster's alert for f.
func OwnFaultEvent(f OwnFault) alert.Event {
	fields := map[string]string{
		"kind":     f.Kind,
		"domain":   f.Domain,
		"mx_host":  f.MXHost,
		"queue_id": f.QueueID,
		"reply":    short(f.Reply),
		"fix":      f.Fix(),
	}
	if f.Sender != "" {
		fields["sender_domain"] = f.Sender
	}
	if f.Client.IsValid() {
		fields["address"] = f.Client.String()
	}
	return alert.Event{Time: f.Time, Kind: EventOwnFault, Summary: f.Summary(), Fields: fields}
}

// ownFault logs a refusal that is our own fault and tells OnOwnFault;
// one older than the block lifetime (a log read from its start) is only
// logged at debug.
func (l *Learner) ownFault(d Delivery, v Verdict, now time.Time) {
	when := d.Time
	if when.IsZero() || when.After(now) {
		when = now
	}
	dom, _ := domain.FromAddress(d.Recipient)
	f := OwnFault{Kind: v.Kind, Sender: v.Sender, Client: v.Client, Domain: dom, MXHost: d.RelayHost,
		QueueID: d.QueueID, Reply: d.Reply, Time: when}
	fields := []zap.Field{zap.String("queue_id", d.QueueID), zap.String("recipient", d.Recipient),
		zap.String("kind", v.Kind), zap.String("sender_domain", v.Sender), zap.String("mx_host", d.RelayHost),
		zap.String("fix", f.Fix()), zap.String("reply", short(d.Reply))}
	if now.Sub(when) >= l.o.BlockTTL {
		l.log.Debug("old refusal, our own fault: "+f.Summary(), fields...)
		return
	}
	l.log.Warn(f.Summary(), fields...)
	if l.o.OnOwnFault != nil {
		l.o.OnOwnFault(f)
	}
}
