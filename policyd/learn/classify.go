package learn

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// Verdict says whether a delivery result means "the receiver refuses our
// sending IP", and whether that refusal concerns our IPv6 address only.
//
// Callers: ignore the result unless Block; with Block and IPv6 the
// destination needs IPv4 (the ipv4 transport; the relay where none is
// configured); with Block alone it needs the relay. Route says the same.
type Verdict struct {
	// Block: the receiver refuses our sending address or its network, so
	// a different route helps. A reject about the message (content,
	// attachments, authentication, the sending domain, the recipient,
	// rates) is never a Block: a relay would not help, or would hide it.
	Block bool
	// IPv6, only with Block: the refusal is of our IPv6 address. We
	// connected to the receiver over IPv6, the reply quotes an IPv6 client
	// address, or the rule itself is about IPv6 (Gmail's IPv6 PTR and
	// authentication requirement). Sending over IPv4 is enough.
	IPv6 bool
	// Client is our address as the reply quotes it ("Client host [x]",
	// "Messages from x", Gmail's "[x]"), when it does: a caller may check
	// that the block is about one of our addresses.
	Client netip.Addr
	Kind   string // which rule: "gmail-ip-reputation", "microsoft-S3150", "dnsbl:zen.spamhaus.org", "content" ...
	Why    string
	// ProviderWide, only with Block: the refusal is of our address or
	// network across the receiver's whole provider (providerWide), so
	// that every destination the provider hosts refuses us too.
	ProviderWide bool
	// OwnFault, never with Block: the refusal is our own configuration's
	// fault (ownFault): a relay would not help, the postmaster must fix
	// it. Kind says what: "authentication" or "ptr".
	OwnFault bool
	// Sender, with OwnFault "authentication": the sender domain the
	// reply names, when it names one.
	Sender string
}

// Route is what a caller does with the destination: "relay", "ipv4", or
// "" (nothing: not a block).
func (v Verdict) Route() string {
	switch {
	case !v.Block:
		return ""
	case v.IPv6:
		return "ipv4"
	}
	return "relay"
}

// providerWide are the kinds whose refusal is of our address or network
// at the whole provider, not at the one destination that answered: each
// provider keeps one list or one reputation for all the domains it hosts.
// A kind missing here is learned for its domain and MX host only.
var providerWide = map[string]bool{
	// Microsoft's own IP block list (Exchange Online Protection and
	// Outlook.com alike): "part of their network is on our block list",
	// refused at every tenant's MX.
	"microsoft-S3140":      true,
	"microsoft-S3150":      true,
	"microsoft-block-list": true,
	// 5.7.606-649 "banned sending IP", 5.7.708 "traffic not accepted from
	// this IP", 4.7.650/651 "rate limited due to IP reputation": EOP's
	// reputation of our address, the same at every tenant.
	"microsoft-banned-ip": true,
	// Microsoft's list of dynamically assigned ranges: a fact about our
	// address, whichever tenant asks.
	"microsoft-dynamic-ip": true,
	// Gmail's reputation of our IP, for gmail.com and every Workspace
	// domain: one infrastructure, one reputation.
	"gmail-ip-reputation": true,
	// Yahoo's [TSS], [IPTS] and [BL] codes: our IP's reputation or
	// listing at Yahoo's (and AOL's) inbound MTAs, whatever the domain.
	"yahoo": true,
	// Not here: "gmail-ipv6-auth" also depends on the message's own
	// authentication, so another sender domain may pass; "dnsbl:ZONE",
	// appliance reputations (Proofpoint, Cisco, Barracuda, Cloudmark) and
	// generic texts are each receiver's own choice of list, even where
	// one provider's network hosts many such receivers.
}

// ownFault are the kinds of refusal that our own configuration causes and
// a relay would only hide: the fix is ours.
var ownFault = map[string]bool{
	"authentication": true, // the sender domain's SPF, DKIM or DMARC (5.7.26, 5.7.509, 5.7.515 ...)
	"ptr":            true, // our IPv4 address has no forward-confirmed PTR (5.7.25); IPv6 is a block (IPv4 helps)
}

// senderREs find the sender domain in an authentication refusal: the
// texts are in classify_test.go.
var senderREs = []*regexp.Regexp{
	regexp.MustCompile(`(?i)sending domain \[?([a-z0-9][a-z0-9.-]*\.[a-z]{2,})\]?`),           // Microsoft 5.7.509, 5.7.515
	regexp.MustCompile(`(?i)Unauthenticated email from ([a-z0-9][a-z0-9.-]*\.[a-z]{2,}) `),    // Gmail DMARC
	regexp.MustCompile(`(?i)SPF (?:check for )?\[([a-z0-9][a-z0-9.-]*\.[a-z]{2,})\]`),         // Gmail 5.7.26
	regexp.MustCompile(`(?i)due to ([a-z0-9][a-z0-9.-]*\.[a-z]{2,})'s DMARC policy`),          // iCloud
	regexp.MustCompile(`(?i)<[^@<>\s]*@([a-z0-9][a-z0-9.-]*\.[a-z]{2,})>: Reject due to SPF`), // GMX, the MAIL FROM address
}

// senderDomain returns the sender domain an authentication refusal
// names, lower case; "" when it names none.
func senderDomain(text string) string {
	for _, re := range senderREs {
		if m := re.FindStringSubmatch(text); m != nil {
			return strings.ToLower(strings.TrimSuffix(m[1], "."))
		}
	}
	return ""
}

type pattern struct {
	kind string
	re   *regexp.Regexp
}

func rule(kind, re string) pattern { return pattern{kind, regexp.MustCompile(re)} }

// The rules, in the order Classify applies them. The texts they come from
// are in classify_test.go, each with its source.
var (
	// receiverErrors look like DNSBL blocks but are the receiver's own
	// failure: Spamhaus answers 127.255.255.x with these texts when the
	// receiver queries through a public resolver or too often, and the
	// receiver rejects every client (Spamhaus's DNSBL return codes,
	// docs.spamhaus.com; the texts link to www.spamhaus.org/returnc/).
	receiverErrors = []pattern{
		rule("receiver-dnsbl-error", `(?i)open resolver|/returnc/|excessive number of queries|query refused|typing error in dnsbl|blocklist\.address\.is\.wrong|127\.255\.255\.25[2-5]`),
	}

	// ipv6Only are rules that by themselves mean "our IPv6 address".
	ipv6Only = []pattern{
		rule("gmail-ipv6-auth", `(?i)IPv6 sending guidelines|IPv6AuthError|ipv6_authentication_error`),
	}

	// builtin are the IP-block texts of the big receivers and blocklists
	// (each with its source in classify_test.go): provider codes first,
	// wording after.
	builtin = []pattern{
		rule("gmail-ip-reputation", `(?i)reputation of the sending IP|unsolicited mail originating from your IP|UnsolicitedRateLimitError|UnsolicitedIPError|NotAuthorizedError|IP you're using to send mail is not authorized`),
		rule("microsoft-S3140", `\bA?S3140\b`),
		rule("microsoft-S3150", `\bA?S3150\b`),
		rule("microsoft-banned-ip", `\b5\.7\.6[0-4][0-9]\b|\b5\.7\.708\b|\b4\.7\.65[01]\b|(?i)banned sending IP|traffic not accepted from this IP|rate limited due to IP reputation`),
		rule("microsoft-dynamic-ip", `\bDY-001\b|(?i)does not relay dynamically-assigned IP`),
		rule("microsoft-block-list", `\b(OU|SC)-00[1-9]\b|(?i)part of their network is on our block ?list|not currently accepting mail from your ip`),
		rule("yahoo", `\[(TSS?0\d|IPTS0\d|BL2\d)\]`),
		rule("gmx-web.de", `(?i)IP address is (black|block) ?listed|[?&]c=bip\b`),
		rule("orange", `\bOFR\d{3}_102\b|(?i)Adresse IP source bloquee|Client host blocked for spamming`),
		rule("t-online", `(?i)IP=\S+ - .*\((BL|RBL|DIAL)\)|Dialup/transient IP not allowed|none/bad reputation`),
		rule("comcast", `(?i)\bcomcast block(ed)? for spam|found on one or more DNSBLs|#BL0000\d\d`),
		rule("att", `(?i)DNSBL:(ATT)?RBL \d+|_is_blocked|att\.net/blocks`),
		rule("trendmicro-ers", `(?i)\bERS-(DUL|QIL|RBL)\b|sender IP found in ERS`),
		rule("cloudmark", `(?i)poor reputation on Cloudmark|csi\.cloudmark\.com`),
		rule("cisco-reputation", `(?i)sending MTA's poor reputation|SenderBase`),
		rule("proofpoint", `(?i)ipcheck\.proofpoint\.com|proofpoint\.com/dnsbl-lookup`),
		rule("barracuda", `(?i)barracudacentral\.org|barracudanetworks\.com/reputation`),
		rule("spamcop", `(?i)spamcop\.net/bl\.shtml`),
		rule("uceprotect", `(?i)UCEPROTECT`),
		rule("spamhaus", `(?i)was rejected due to listing in Spamhaus|spamhaus\.org/(query/ip/|query/bl\?ip=|sbl/query/)|Spamhaus XBL|Spamhaus's list`),
		// "IP ... listed", before the message rules: "Message refused,
		// your IP x is blacklisted" is about the IP, not the message.
		rule("generic-blocklist", `(?i)\bIP( address)?\b[^.;]{0,40}?\b(black ?listed|block ?listed|listed (on|at|in|by))\b`),
	}

	// ptr rejects are about our reverse DNS. For IPv4 that is a fault to
	// fix (a relay would hide it from every receiver that checks); for
	// IPv6, where reverse DNS is often out of our hands, sending over IPv4
	// is the answer.
	ptr = rule("ptr", `(?i)\bPTR\b|reverse DNS|reverse (host ?name|lookup)|cannot find your (reverse )?hostname|\b5\.7\.25\b|\brDNS\b`)

	// never are replies about the message, the sending domain, the
	// recipient or the session: not about our IP, so not learned.
	never = []pattern{
		rule("domain-reputation", `(?i)reputation of the sending domain|MailFrom domain is listed|domain present in the Spamhaus DBL|\bdbl\.spamhaus\.org\b|Spamhaus DBL|(sender address|helo command|recipient address) \[[^\]]*\] blocked using|\bURIBL\b|\bSURBL\b|sender domain (is )?(listed|blacklisted|blocked)`),
		rule("content", `(?i)likely unsolicited mail|UnsolicitedMessageError|nature of the content|links within|\bspam (content|message|url|score)|content (filter|policy|rejected|denied)|(message|mail|email) content|suspicion of spam|(rejected|classified|detected|flagged|identified) as spam|looks like spam|appears to be spam|probab(le|ility of) spam|\bvirus\b|malware|attachment|file ?type|banned content|\bphish|\[PH01\]`),
		rule("authentication", `\b[45]\.7\.(23|26|27|509|510|515)\b|(?i)\b(DMARC|SPF|DKIM)\b|unauthenticated|authentication (fail|required|level)`),
		rule("rate", `(?i)too many (connections|messages|recipients|errors)|connection rate|slow down|excessive volume|receiving mail at a rate|ReceivingRate|per (hour|minute|day)\b|messages? per connection|\bratelimit`),
		rule("recipient", `\b[45]\d\d[ -][45]\.[12]\.\d{1,3}\b|\b5\.4\.1\b|(?i)user unknown|unknown user|no such (user|recipient|mailbox)|mailbox (is )?(full|unavailable|not found|disabled)|over ?quota|quota exceeded|out of storage|does not exist|account (is )?(disabled|inactive)|invalid (recipient|mailbox)|not our customer|mailbox unallocated`),
		rule("message-policy", `(?i)\b(message|e-?mail|mail|envelope)s? (was |has been |is |were )?(blocked|rejected|refused|denied|not accepted|not allowed|filtered|quarantined)\b|polic(y|ies) (reasons|restrictions|rejection|violation)|due to (local |security |organi[sz]ational )?polic|\[(CS01|HM08)\]|administrative prohibition|blocked senders?`),
		rule("relaying", `(?i)relay(ing)? (access )?(denied|not permitted)|sender address rejected`),
		rule("greylisting", `(?i)grey[- ]?list|gray[- ]?list|try again later`),
		rule("tls", `(?i)\bTLS\b|STARTTLS|certificate|handshake`),
	}

	// Postfix's default_rbl_reply is "Service unavailable; $rbl_class
	// [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}"
	// (postconf(5)); Microsoft writes "Client host [x] blocked using
	// Spamhaus". The zone is a DNS name or a product name of a few words.
	zone        = `(?:\d{3}[ -])?([A-Za-z0-9][A-Za-z0-9.+-]*[A-Za-z0-9+](?: [A-Za-z][A-Za-z0-9+]*){0,3})`
	clientRBLRE = regexp.MustCompile(`(?i)\b(?:client host|client|host) \[[^\]]*\] blocked using ` + zone)
	anyRBLRE    = regexp.MustCompile(`(?i)\bblocked using ` + zone)

	// generic is a last resort: a blocklist or reputation word together
	// with a word about our IP or host.
	ipWordRE   = regexp.MustCompile(`(?i)\bIP(v[46])?\b|client host|\bclient\b|sending (MTA|server|host)|your (server|host|mail ?server|network)`)
	listWordRE = regexp.MustCompile(`(?i)black ?list|block ?list|\bblocked\b|\bbanned\b|(poor|bad|low|negative) reputation|reputation (fail|score)|\blisted (on|at|in|by)\b|\bin an RBL\b|\bDNSBL\b`)

	// A 5xx at the greeting comes before any envelope: it can only be
	// about the client (smtp_skip_5xx_greeting logs it with a 4.x.x dsn).
	// 521 is the exception: the host accepts no mail at all (RFC 7504).
	greetingRE = regexp.MustCompile(`refused to talk to me: 5([013-9]\d|2[02-9])\b`)
)

const maxReply = 8 << 10

// Classifier applies the patterns: the configured ignore patterns first,
// then the configured block patterns, then the built-in rules in the
// order of the variables above.
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
// remote reply can be blocks. Configured patterns see the whole reply
// text; the built-in rules see the remote server's words only, without
// Postfix's "host H[ip] said:" in front.
func (c *Classifier) Classify(d Delivery) Verdict {
	switch d.Status {
	case "deferred", "bounced", "expired", "SOFTBOUNCE", "":
	default:
		return Verdict{Why: "status " + d.Status}
	}
	reply := d.Reply
	if len(reply) > maxReply {
		reply = reply[:maxReply] // a syslog line is at most 8 KiB (rsyslog's default); bounds the regexp work
	}
	if !strings.Contains(reply, "said:") && !strings.Contains(reply, "refused to talk to me") && d.Status != "" {
		return Verdict{Why: "no reply from the remote server"}
	}
	text := remoteText(reply)
	client := clientAddr(text, d.RelayAddr)
	v6 := client.Is6() || (d.RelayAddr.Is6() && !d.RelayAddr.Is4In6())
	block := func(kind, why string) Verdict {
		return Verdict{Block: true, IPv6: v6, Client: client, Kind: kind, Why: why, ProviderWide: providerWide[kind]}
	}
	not := func(kind, why string) Verdict {
		v := Verdict{Client: client, Kind: kind, Why: why, OwnFault: ownFault[kind]}
		if kind == "authentication" {
			v.Sender = senderDomain(text)
		}
		return v
	}

	for _, p := range c.ignore {
		if p.re.MatchString(reply) {
			return not("ignored", "matches ignore pattern "+p.re.String())
		}
	}
	for _, p := range c.extra {
		if p.re.MatchString(reply) {
			return block("config", "matches pattern "+p.re.String())
		}
	}
	if p := first(receiverErrors, text); p != nil {
		return not(p.kind, "the receiver's own DNSBL failure, not a listing of our IP")
	}
	if p := first(ipv6Only, text); p != nil {
		v := block(p.kind, "an IPv6-only requirement: send over IPv4")
		v.IPv6 = true
		return v
	}
	if m := clientRBLRE.FindStringSubmatch(text); m != nil {
		z := zoneName(m[1])
		return block("dnsbl:"+z, "client blocked using "+z)
	}
	if p := first(builtin, text); p != nil {
		return block(p.kind, "matches "+p.kind)
	}
	if ptr.re.MatchString(text) {
		if v6 {
			return block(ptr.kind, "reverse DNS of our IPv6 address: send over IPv4")
		}
		return not(ptr.kind, "reverse DNS of our IPv4 address: fix the PTR record")
	}
	if p := first(never, text); p != nil {
		return not(p.kind, "not an IP block: "+p.kind)
	}
	if m := anyRBLRE.FindStringSubmatch(text); m != nil {
		z := zoneName(m[1])
		return block("dnsbl:"+z, "blocked using "+z)
	}
	if listWordRE.MatchString(text) && (client.IsValid() || ipWordRE.MatchString(text)) {
		return block("generic-blocklist", "blocklist or reputation text about our IP")
	}
	if greetingRE.MatchString(reply) {
		return block("greeting-refused", "5xx at the greeting: a refusal of our IP")
	}
	return not("", "not a block")
}

func first(ps []pattern, s string) *pattern {
	for i := range ps {
		if ps[i].re.MatchString(s) {
			return &ps[i]
		}
	}
	return nil
}

// remoteText drops Postfix's "host H[ip] said: " or "host H[ip] refused
// to talk to me: " in front of the remote server's reply.
func remoteText(reply string) string {
	for _, sep := range []string{" said: ", " refused to talk to me: "} {
		if i := strings.Index(reply, sep); i >= 0 && strings.HasPrefix(reply, "host ") {
			return reply[i+len(sep):]
		}
	}
	return reply
}

// zoneName normalises the zone of "blocked using ZONE": a DNS name is
// one word; a product name ("Barracuda Reputation") is joined with dashes.
func zoneName(z string) string {
	z = strings.ToLower(z)
	if name, _, ok := strings.Cut(z, " "); ok && strings.Contains(name, ".") {
		return name
	}
	return strings.ReplaceAll(z, " ", "-")
}

func isAddrSep(r rune) bool {
	switch r {
	case ' ', '\t', '[', ']', '(', ')', '<', '>', ';', ',', '=', '?', '&', '/', '\'', '"':
		return true
	}
	return false
}

// clientAddr finds the first IP address the remote text quotes, other than
// the receiver's own and loopback ones: our address, in every text that
// names one ("Client host [x]", "Messages from x", Gmail's padded
// "[x      15]", "IP=x", a lookup URL "...?ip=x").
func clientAddr(text string, relay netip.Addr) netip.Addr {
	for _, f := range strings.FieldsFunc(text, isAddrSep) {
		f = strings.TrimPrefix(f, "IPv6:")
		a, err := netip.ParseAddr(f)
		if err != nil {
			if a, err = netip.ParseAddr(strings.TrimRight(f, ".:")); err != nil {
				continue
			}
		}
		a = a.Unmap()
		if a.IsLoopback() || a.IsUnspecified() || a.Zone() != "" || a == relay.Unmap() {
			continue
		}
		return a
	}
	return netip.Addr{}
}
