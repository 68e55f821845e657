package learn

import (
	"fmt"
	"regexp"
	"strings"
)

// Verdict says whether a delivery result means "the receiver refuses our
// sending IP".
type Verdict struct {
	Block bool
	Kind  string // which pattern: "gmail-ip-reputation", "microsoft-S3150", "dnsbl:zen.spamhaus.org" ...
	Why   string
}

type pattern struct {
	kind string
	re   *regexp.Regexp
}

// never are replies that look like blocks but are not about our IP: a
// relay would not help, so they must not be learned (reference §6.6).
var never = []pattern{
	{"receiver-resolver-error", regexp.MustCompile(`(?i)open resolver|/returnc/|spamhaus\.org/returnc`)},
	{"content", regexp.MustCompile(`(?i)likely unsolicited mail|UnsolicitedMessageError`)},
	{"domain-reputation", regexp.MustCompile(`(?i)reputation of the sending domain`)},
	{"authentication", regexp.MustCompile(`\b5\.7\.(26|515|27|25)\b|(?i)\b(DMARC|SPF|DKIM) `)},
	{"recipient", regexp.MustCompile(`\b[45]\d\d[ -][45]\.[12]\.\d{1,3}\b|(?i)user unknown|no such user|mailbox (is )?(full|unavailable)|over quota|receiving mail at a rate`)},
	{"greylisting", regexp.MustCompile(`(?i)grey[- ]?list|gray[- ]?list|try again later`)},
	{"tls", regexp.MustCompile(`(?i)\bTLS\b|STARTTLS|certificate|handshake`)},
}

// builtin are the block texts of the big receivers (reference §6.2-6.6).
var builtin = []pattern{
	{"gmail-ip-reputation", regexp.MustCompile(`(?i)reputation of the sending IP|unsolicited mail originating from your IP|UnsolicitedRateLimitError|UnsolicitedIPError|NotAuthorizedError|IP you're using to send mail is not authorized`)},
	{"microsoft-S3140", regexp.MustCompile(`\b[AS]S?3140\b|\(S3140\)|\(AS3140\)`)},
	{"microsoft-S3150", regexp.MustCompile(`\(S3150\)|\bS3150\b`)},
	{"microsoft-banned-ip", regexp.MustCompile(`\b5\.7\.6[0-4][0-9]\b|\b5\.7\.708\b|\b4\.7\.65[01]\b`)},
	{"yahoo", regexp.MustCompile(`\[(TSS0\d|IPTS0\d|BL2\d)\]`)},
	{"microsoft-block-list", regexp.MustCompile(`(?i)part of their network is on our block ?list`)},
}

var (
	dnsblRE   = regexp.MustCompile(`(?i)blocked using ([a-z0-9][a-z0-9.-]*[a-z0-9])`)
	genericRE = regexp.MustCompile(`(?i)black ?list|block ?list|blocked|poor reputation|bad reputation|low reputation|listed (on|at|in)\b`)
)

// Classifier applies the patterns: the configured ignore patterns first,
// then the configured block patterns, then the built-in non-blocks and
// blocks.
type Classifier struct {
	extra, ignore []pattern
}

// NewClassifier compiles the configured patterns; an error names the bad one.
func NewClassifier(extra, ignore []string) (*Classifier, error) {
	c := &Classifier{}
	for _, l := range []struct {
		src []string
		dst *[]pattern
		key string
	}{{extra, &c.extra, "patterns"}, {ignore, &c.ignore, "ignore_patterns"}} {
		for _, s := range l.src {
			re, err := regexp.Compile(s)
			if err != nil {
				return nil, fmt.Errorf("%s: %q: %w", l.key, s, err)
			}
			*l.dst = append(*l.dst, pattern{"config", re})
		}
	}
	return c, nil
}

// Classify decides on one delivery result: only failed deliveries with a
// remote reply can be blocks.
func (c *Classifier) Classify(d Delivery) Verdict {
	switch d.Status {
	case "deferred", "bounced", "expired", "SOFTBOUNCE", "":
	default:
		return Verdict{Why: "status " + d.Status}
	}
	reply := d.Reply
	if !strings.Contains(reply, "said:") && !strings.Contains(reply, "refused to talk to me") && d.Status != "" {
		return Verdict{Why: "no reply from the remote server"}
	}
	for _, p := range c.ignore {
		if p.re.MatchString(reply) {
			return Verdict{Kind: "ignored", Why: "matches ignore pattern " + p.re.String()}
		}
	}
	for _, p := range c.extra {
		if p.re.MatchString(reply) {
			return Verdict{Block: true, Kind: "config", Why: "matches pattern " + p.re.String()}
		}
	}
	for _, p := range builtin {
		if p.re.MatchString(reply) {
			return Verdict{Block: true, Kind: p.kind, Why: "matches " + p.kind}
		}
	}
	for _, p := range never {
		if p.re.MatchString(reply) {
			return Verdict{Kind: p.kind, Why: "not an IP block: " + p.kind}
		}
	}
	if m := dnsblRE.FindStringSubmatch(reply); m != nil {
		zone := strings.ToLower(m[1])
		return Verdict{Block: true, Kind: "dnsbl:" + zone, Why: "blocked using " + zone}
	}
	if genericRE.MatchString(reply) {
		return Verdict{Block: true, Kind: "generic-blocklist", Why: "blocklist or reputation text"}
	}
	return Verdict{Why: "not a block"}
}
