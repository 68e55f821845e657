package filter

import (
	"context"
	"fmt"
	"net/mail"
	"net/netip"

	"github.com/d--j/go-milter"

	"github.com/mxdetour/mxdetour/internal/domain"
	"github.com/mxdetour/mxdetour/internal/geo"
	"github.com/mxdetour/mxdetour/milter/dkim"
)

// Query is a message `mxdetour-milter explain` is asked about: no
// message is sent, the stages decide on these facts alone.
type Query struct {
	From   string     // the From header's address (and the envelope sender)
	Client netip.Addr // the SMTP client; invalid: not given
	Sender            // login, trusted network, posted by Postfix itself
	To     []string   // recipients
}

// Explanation is what the milter would do with a Query, stage by stage.
type Explanation struct {
	Country Country    // MAIL FROM
	Rcpts   []Rcpt     // RCPT TO, one per recipient
	Sign    SignPlan   // end of message
	Keys    []KeyShown // Sign.Keys, with their sources
}

// Country is the country rules' answer at MAIL FROM.
type Country struct {
	Refused bool
	Reply   string      // the reply the client gets when Refused
	Verdict geo.Verdict // the rule that matched (Rule < 0: none)
	Exempt  string      // why the rules were not asked; "" when they were
	Err     error       // the lookup failed: accepted (fail open)
}

// Rcpt is the answer to one recipient at RCPT TO.
type Rcpt struct {
	Addr    string
	Refused bool
	Reply   string
}

// KeyShown is a signing key and where it came from.
type KeyShown struct {
	Key    *dkim.Key
	Source string
}

// Explain runs the decisions of the stages for q on st, as a session
// would, with rot picking among rotations' keys (nil: every key signs).
func Explain(ctx context.Context, st *State, rot *dkim.Rotation, q Query) Explanation {
	var e Explanation
	e.Country = countryAt(ctx, st, q.Sender, q.Client)
	for _, r := range q.To {
		if text := reservedReply(st, r); text != "" && !q.Local {
			e.Rcpts = append(e.Rcpts, Rcpt{Addr: r, Refused: true, Reply: "550 " + text})
		} else {
			e.Rcpts = append(e.Rcpts, Rcpt{Addr: r})
		}
	}
	from := "<" + q.From + ">"
	if a, err := mail.ParseAddress(q.From); err == nil {
		from = (&mail.Address{Address: a.Address}).String()
	}
	e.Sign = PlanSigning(st, rot, q.Sender, []string{from}, nil)
	for _, k := range e.Sign.Keys {
		e.Keys = append(e.Keys, KeyShown{Key: k, Source: Source(k, e.Sign.FromDomain)})
	}
	return e
}

// countryExempt says why the country rules are not asked about a client,
// "" when they are.
func countryExempt(st *State, s Sender) string {
	switch {
	case s.Auth != "":
		return "the client authenticated"
	case s.Trusted:
		return "the client is in trusted_networks"
	case !st.Geo.Active():
		return "no country rule applies ([milter.geo] has no rule, or its data did not load)"
	}
	return ""
}

// countryAt is the country rules' answer for client.
func countryAt(ctx context.Context, st *State, s Sender, client netip.Addr) Country {
	c := Country{Verdict: geo.Verdict{Rule: -1}}
	if c.Exempt = countryExempt(st, s); c.Exempt != "" {
		return c
	}
	if !client.IsValid() {
		c.Exempt = "no client address given (-client)"
		return c
	}
	c.Verdict, c.Err = st.Geo.Check(ctx, client)
	if c.Err == nil && c.Verdict.Refuse() {
		code, text := geoReply(c.Verdict)
		c.Refused, c.Reply = true, fmt.Sprintf("%d %s", code, text)
	}
	return c
}

// reservedReply is the text of the 550 refusing a recipient in a
// reserved domain (RFC 2606/6761 and [domains] reserved) at RCPT, ""
// when the recipient is not refused for that.
func reservedReply(st *State, rcpt string) string {
	if !st.Opts.RejectReserved {
		return ""
	}
	d, err := domain.FromAddress(rcpt)
	if err != nil || !domain.Reserved(d, st.Opts.Reserved) {
		return ""
	}
	return fmt.Sprintf("5.1.2 <%s>: Recipient address rejected: %s is a reserved domain and does not receive mail", milter.RemoveAngle(rcpt), d)
}
