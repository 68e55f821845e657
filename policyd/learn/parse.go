package learn

import (
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Delivery is one result line of Postfix's smtp(8) or lmtp(8) client:
//
//	postfix/smtp[1612]: 97B425F905: to=<a@gmail.com>, relay=h[ip]:25, ..., dsn=4.7.0, status=deferred (host h[ip] said: ...)
//
// or, for a host that was not the last one tried, a line without to=:
//
//	postfix/smtp[1295]: BC495AA0516: host h[ip] said: 421 4.7.0 ... (in reply to MAIL FROM command)
type Delivery struct {
	Time          time.Time // from the syslog prefix; zero when it had none
	Service       string    // "smtp", "relay/smtp", "lmtp" ...
	QueueID       string
	Recipient     string // "" for a non-final host line
	OrigRecipient string
	RelayHost     string // lower case; "none" when no connection was made
	RelayAddr     netip.Addr
	RelayPort     int
	DSN           string
	Status        string // sent, deferred, bounced, expired; "" for a non-final host line
	Reply         string // the text in parentheses, or after "said:"
}

var (
	// The service part: postfix/smtp, postfix/relay/smtp, postfix-out/smtp ...
	lineRE  = regexp.MustCompile(`\bpostfix[^ /\[]*/((?:[^ \[:]+/)*(?:smtp|lmtp))\[\d+\]: ([0-9A-Za-z]{5,}): (.*)$`)
	relayRE = regexp.MustCompile(`^([^\[\]]+)\[([^\]]*)\](?::(\d+))?$`)
	hostRE  = regexp.MustCompile(`^host ([^\[ ]+)\[([^\]]*)\] (said|refused to talk to me): (.*)$`)
)

// ParseLine parses one log line; ok is false for lines that are not an
// smtp/lmtp delivery result, and for a delivery result that is not where
// syslog puts a program's tag (see parseLine).
func ParseLine(line string) (d Delivery, ok bool) {
	d, ok, _ = parseLine(line)
	return d, ok
}

// parseLine is ParseLine that also says when the line holds a delivery
// result inside another program's message (misplaced): "smtpd[1]: NOQUEUE:
// reject: ... from=<"postfix/smtp[1]: ID: to=<...>, status=bounced
// (...)"@evil.example>" carries one in a sender address that anyone who
// can reach port 25 chooses. Postfix's own result starts right after the
// syslog prefix (time, host), which has no ": " in it; anything after a
// tag's ": " is a message, never a tag.
func parseLine(line string) (d Delivery, ok, misplaced bool) {
	m := lineRE.FindStringSubmatchIndex(line)
	if m == nil {
		return Delivery{}, false, false
	}
	if strings.Contains(line[:m[0]], ": ") {
		_, forged := parseMatch(line, m)
		return Delivery{}, false, forged
	}
	d, ok = parseMatch(line, m)
	return d, ok, false
}

// parseMatch parses the delivery result lineRE matched at m.
func parseMatch(line string, m []int) (d Delivery, ok bool) {
	d.Service, d.QueueID = line[m[2]:m[3]], line[m[4]:m[5]]
	rest := line[m[6]:m[7]]
	d.Time = parseTime(line[:m[0]])
	if h := hostRE.FindStringSubmatch(rest); h != nil {
		d.RelayHost = strings.ToLower(h[1])
		d.RelayAddr, _ = netip.ParseAddr(strings.TrimPrefix(h[2], "IPv6:"))
		d.Reply = h[4]
		return d, true
	}
	if !strings.HasPrefix(rest, "to=<") {
		return Delivery{}, false
	}
	// The fields before status= are "name=value, "; the status text is
	// the rest of the line in parentheses.
	statusAt := strings.Index(rest, ", status=")
	if statusAt < 0 {
		return Delivery{}, false
	}
	for _, f := range splitFields(rest[:statusAt]) {
		name, value, _ := strings.Cut(f, "=")
		switch name {
		case "to":
			d.Recipient = strings.Trim(value, "<>")
		case "orig_to":
			d.OrigRecipient = strings.Trim(value, "<>")
		case "relay":
			d.RelayHost = strings.ToLower(value)
			if r := relayRE.FindStringSubmatch(value); r != nil {
				d.RelayHost = strings.ToLower(r[1])
				d.RelayAddr, _ = netip.ParseAddr(strings.TrimPrefix(r[2], "IPv6:"))
				d.RelayPort, _ = strconv.Atoi(r[3])
			}
		case "dsn":
			d.DSN = value
		}
	}
	status := rest[statusAt+len(", status="):]
	word, text, _ := strings.Cut(status, " ")
	d.Status = word
	d.Reply = strings.TrimSuffix(strings.TrimPrefix(text, "("), ")")
	return d, d.Recipient != ""
}

// splitFields splits "to=<a, b>, relay=x" on ", " outside angle brackets.
func splitFields(s string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '<':
			depth++
		case '>':
			if depth > 0 {
				depth--
			}
		case ',':
			if depth == 0 && i+1 < len(s) && s[i+1] == ' ' {
				out = append(out, s[start:i])
				start = i + 2
				i++
			}
		}
	}
	return append(out, s[start:])
}

// parseTime reads the timestamp of a syslog prefix: RFC 3164
// ("Nov 24 10:00:00 host") — in the current year, or the last one when it
// would be in the future — or RFC 3339 / RFC 5424 ("2026-11-24T10:00:00.123+00:00 host").
func parseTime(prefix string) time.Time {
	if strings.HasPrefix(prefix, "<") { // an RFC 5424 "<13>1 " priority and version
		if i := strings.IndexByte(prefix, ' '); i > 0 {
			prefix = prefix[i+1:]
		}
	}
	field, _, _ := strings.Cut(prefix, " ")
	if t, err := time.Parse(time.RFC3339Nano, field); err == nil {
		return t
	}
	if len(prefix) >= 15 {
		if t, err := time.ParseInLocation(time.Stamp, prefix[:15], time.Local); err == nil {
			now := time.Now()
			t = t.AddDate(now.Year(), 0, 0)
			if t.After(now.Add(24 * time.Hour)) {
				t = t.AddDate(-1, 0, 0)
			}
			return t
		}
	}
	return time.Time{}
}
