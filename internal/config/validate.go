package config

import (
	"fmt"
	"maps"
	"net"
	"net/mail"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/mxdetour/mxdetour/internal/domain"
)

// Validate checks the meaning of every value; Parse calls it. Problems are
// reported together.
func (c *Config) Validate() error {
	p := &parser{file: "configuration"}
	if errs := c.validate(p); len(errs) > 0 {
		return Errors(errs)
	}
	return nil
}

func (c *Config) validate(p *parser) Errors {
	before := len(p.errs)
	oneOf(p, "log.level", c.Log.Level, "debug", "info", "warn", "error")
	oneOf(p, "log.format", c.Log.Format, "console", "json")

	for i, s := range c.DNS.Servers {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			host, port = s, "53"
		}
		if net.ParseIP(host) == nil {
			p.add("dns.servers", "%q is not an IP address (with an optional :port)", s)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			p.add("dns.servers", "%q has a bad port", s)
		} else {
			c.DNS.Servers[i] = net.JoinHostPort(host, port)
		}
	}
	positive(p, "dns.timeout", c.DNS.Timeout)
	positive(p, "dns.min_ttl", c.DNS.MinTTL)
	positive(p, "dns.max_ttl", c.DNS.MaxTTL)
	positive(p, "dns.negative_max_ttl", c.DNS.NegativeMaxTTL)
	positive(p, "dns.error_ttl", c.DNS.ErrorTTL)
	if c.DNS.StaleTTL.Duration < 0 {
		p.add("dns.stale_ttl", "must not be negative")
	}
	if c.DNS.MinTTL.Duration > c.DNS.MaxTTL.Duration {
		p.add("dns.min_ttl", "is larger than dns.max_ttl (%s)", c.DNS.MaxTTL.Duration)
	}
	atLeast(p, "dns.attempts", c.DNS.Attempts, 1)
	atLeast(p, "dns.cache_size", c.DNS.CacheSize, 1)

	c.Domains.Reserved = domains(p, "domains.reserved", c.Domains.Reserved)
	c.Domains.Local = domains(p, "domains.local", c.Domains.Local)

	listenAddr(p, "policyd.policy_listen", c.Policyd.PolicyListen, true)
	listenAddr(p, "policyd.socketmap_listen", c.Policyd.SocketmapListen, true)
	socketMode(p, "policyd.socket_mode", c.Policyd.SocketMode)
	positive(p, "policyd.decision_timeout", c.Policyd.DecisionTimeout)
	positive(p, "policyd.idle_timeout", c.Policyd.IdleTimeout)
	atLeast(p, "policyd.max_request_size", c.Policyd.MaxRequestSize, 1024)
	atLeast(p, "policyd.max_connections", c.Policyd.MaxConnections, 1)
	oneOf(p, "policyd.null_mx", c.Policyd.NullMX, "direct", "reject")
	oneOf(p, "policyd.on_dns_failure", c.Policyd.OnDNSFailure, "direct", "temp")

	transport(p, "transports.relay", c.Transports.Relay)
	transport(p, "transports.ipv4", c.Transports.IPv4)

	positive(p, "self.check_interval", c.Self.CheckInterval)
	for i, a := range c.Self.IPv4 {
		if !a.Unmap().Is4() {
			p.add("self.ipv4", "%s is not an IPv4 address", a)
		}
		c.Self.IPv4[i] = a.Unmap()
	}
	for _, a := range c.Self.IPv6 {
		if !a.Is6() || a.Is4In6() {
			p.add("self.ipv6", "%s is not an IPv6 address", a)
		}
	}

	for name, pr := range c.Providers {
		key := "providers." + name
		oneOf(p, key+".route", pr.Route, "always", "when-listed", "ipv4-when-listed", "never")
		switch {
		case name == DefaultProvider && (len(pr.MXSuffixes) > 0 || len(pr.ASNs) > 0):
			p.add(key, "matches every destination no other provider claims: it takes no mx_suffixes or asns")
		case name != DefaultProvider && pr.Enabled && len(pr.MXSuffixes) == 0 && len(pr.ASNs) == 0:
			p.add(key, "names neither mx_suffixes nor asns: it can never match")
		}
		pr.MXSuffixes = domains(p, key+".mx_suffixes", pr.MXSuffixes)
		pr.Zones = domains(p, key+".zones", pr.Zones)
		c.Providers[name] = pr
	}
	for i, r := range c.Rules {
		key := fmt.Sprintf("rules[%d]", i)
		if (r.Domain == "") == (r.Address == "") {
			p.add(key, "needs exactly one of domain or address")
		}
		oneOf(p, key+".route", r.Route, "direct", "relay", "ipv4")
		if r.Domain != "" {
			c.Rules[i].Domain = domainName(p, key+".domain", r.Domain)
		}
	}

	if c.Learn.Enabled {
		if !filepath.IsAbs(c.Learn.LogFile) {
			p.add("learn.log_file", "must be an absolute path")
		}
		if !filepath.IsAbs(c.Learn.StateFile) {
			p.add("learn.state_file", "must be an absolute path")
		}
	}
	oneOf(p, "learn.source", c.Learn.Source, "auto", "journal", "file")
	positive(p, "learn.block_ttl", c.Learn.BlockTTL)
	if c.Learn.Requeue && strings.TrimSpace(c.Learn.Postsuper) == "" {
		p.add("learn.postsuper", "is needed when learn.requeue is true")
	}

	listenAddr(p, "milter.listen", c.Milter.Listen, false)
	dialAddr(p, "milter.policyd_listen", c.Milter.PolicydListen)
	socketMode(p, "milter.socket_mode", c.Milter.SocketMode)
	oneOf(p, "milter.on_error", c.Milter.OnError, "accept", "tempfail")
	canon(p, c.Milter.DKIM.Canonicalization)
	if c.Milter.DKIM.RotationOverlap.Duration < 0 {
		p.add("milter.dkim.rotation_overlap", "must not be negative")
	}
	if f := c.Milter.DKIM.RotationStateFile; f != "" && !filepath.IsAbs(f) {
		p.add("milter.dkim.rotation_state_file", "must be an absolute path (or \"\" to keep it in memory)")
	}
	oneOf(p, "milter.dkim.rotation_selectors", c.Milter.DKIM.RotationSelectors, "generations", "alternate")
	if dir := c.Milter.DKIM.KeyDir; dir != "" && !filepath.IsAbs(dir) {
		p.add("milter.dkim.key_dir", "must be an absolute path (or \"\" for none)")
	}
	if t := c.Milter.DKIM.KeyFileTemplate; strings.Count(t, "{domain}") != 1 || strings.Count(t, "{selector}") != 1 ||
		strings.ContainsAny(t, "/\\") || strings.HasPrefix(t, ".") {
		p.add("milter.dkim.key_file_template", "%q must be a file name holding {domain} and {selector} once each, such as \"{domain}.{selector}.key\"", t)
	}
	if d := c.Milter.DKIM.DefaultDomain; d != "" {
		c.Milter.DKIM.DefaultDomain = domainName(p, "milter.dkim.default_domain", d)
	}
	for i, k := range c.Milter.DKIM.Keys {
		key := fmt.Sprintf("milter.dkim.keys[%d]", i)
		for _, f := range []struct{ name, v string }{{"domain", k.Domain}, {"selector", k.Selector}, {"key_file", k.KeyFile}} {
			if f.v == "" {
				p.add(key+"."+f.name, "must be set")
			}
		}
		if k.Domain != "" {
			c.Milter.DKIM.Keys[i].Domain = domainName(p, key+".domain", k.Domain)
		}
	}
	c.validateGeo(p)
	listenAddr(p, "metrics.policyd_listen", c.Metrics.PolicydListen, true)
	listenAddr(p, "metrics.milter_listen", c.Metrics.MilterListen, true)
	c.validateAlerts(p)
	c.validateLimits(p)
	c.validateFleet(p)
	return p.errs[before:]
}

func oneOf(p *parser, key, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	p.add(key, "%q is not one of %s", v, quoteList(allowed))
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

func positive(p *parser, key string, d Duration) {
	if d.Duration <= 0 {
		p.add(key, "must be a positive duration")
	}
}

func atLeast(p *parser, key string, v, min int) {
	if v < min {
		p.add(key, "must be at least %d", min)
	}
}

// listenAddr accepts "host:port" with a numeric port or "unix:/absolute/path".
func listenAddr(p *parser, key, v string, emptyOK bool) {
	if v == "" {
		if !emptyOK {
			p.add(key, "must be set")
		}
		return
	}
	if path, ok := strings.CutPrefix(v, "unix:"); ok {
		if !filepath.IsAbs(path) {
			p.add(key, "%q: a unix socket needs an absolute path (unix:/run/mxdetour/x.sock)", v)
		}
		return
	}
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		p.add(key, "%q is neither host:port nor unix:/path", v)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		p.add(key, "%q has a bad port", v)
	}
}

// dialAddr accepts what listenAddr does, and an abstract unix socket,
// "unix:@name", which a client can dial though no listener of ours makes
// one (systemd's socket units do). "" is fine: the key has a fallback.
func dialAddr(p *parser, key, v string) {
	if name, ok := strings.CutPrefix(v, "unix:@"); ok {
		if name == "" || strings.ContainsRune(name, 0) {
			p.add(key, "%q: an abstract unix socket needs a name (unix:@mxdetour-policy)", v)
		}
		return
	}
	listenAddr(p, key, v, true)
}

func socketMode(p *parser, key, v string) {
	if m, err := strconv.ParseUint(v, 8, 32); err != nil || m > 0o777 {
		p.add(key, "%q is not an octal file mode such as \"0660\"", v)
	}
}

func transport(p *parser, key, v string) {
	if v != "" && (!strings.Contains(v, ":") || strings.ContainsAny(v, " \t\n")) {
		p.add(key, "%q is not a Postfix transport:nexthop (such as \"relay:[mx03.example.net]:587\")", v)
	}
}

func canon(p *parser, v string) {
	h, b, ok := strings.Cut(v, "/")
	valid := func(s string) bool { return s == "simple" || s == "relaxed" }
	if !ok || !valid(h) || !valid(b) {
		p.add("milter.dkim.canonicalization", "%q is not header/body canonicalization such as \"relaxed/relaxed\"", v)
	}
}

// domains normalises a list of domain names as recipient domains are
// (lower case, IDNA A-labels, no trailing dot), so that
// local = ["Bücher.example"] matches mail to xn--bcher-kva.example.
func domains(p *parser, key string, l []string) []string {
	for i, d := range l {
		l[i] = domainName(p, key, d)
	}
	return l
}

func domainName(p *parser, key, d string) string {
	n, err := domain.Normalize(strings.TrimSpace(d))
	if err != nil || domain.IsLiteral(n) {
		p.add(key, "%q is not a domain name", d)
		return d
	}
	return n
}

func (c *Config) validateAlerts(p *parser) {
	a := c.Alerts
	for _, kv := range [][2]string{{"alerts.mail_to", a.MailTo}, {"alerts.from", a.From}} {
		if kv[1] == "" {
			continue
		}
		if _, err := mail.ParseAddress(kv[1]); err != nil || strings.ContainsAny(kv[1], "<>, ") {
			p.add(kv[0], "%q is not one plain mail address (like \"postmaster@example.net\")", kv[1])
		}
	}
	if a.MailTo != "" && !filepath.IsAbs(a.Sendmail) {
		p.add("alerts.sendmail", "%q is not an absolute path", a.Sendmail)
	}
	if a.WebhookURL != "" {
		u, err := url.Parse(a.WebhookURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.add("alerts.webhook_url", "%q is not an http:// or https:// URL", a.WebhookURL)
		}
	}
	if a.Interval.Duration < 0 {
		p.add("alerts.interval", "must not be negative")
	}
}

// validateLimits checks [[limits]] and [compromise]; an action left out
// is "HOLD", written in any case.
func (c *Config) validateLimits(p *parser) {
	seen := map[string]int{}
	for i := range c.Limits {
		l := &c.Limits[i]
		key := fmt.Sprintf("limits[%d]", i)
		oneOf(p, key+".key", l.Key, limitKeys...)
		atLeast(p, key+".max", l.Max, 1)
		validateLimitKeys(p, key, l)
		positive(p, key+".window", l.Window)
		if l.Action = strings.ToUpper(l.Action); l.Action == "" {
			l.Action = "HOLD"
		}
		oneOf(p, key+".action", l.Action, "HOLD", "DEFER", "REJECT")
		if pr, ok := c.Providers[l.DestinationProvider]; l.DestinationProvider != "" && (!ok || !pr.Enabled) {
			p.add(key+".destination_provider", "%q is not an enabled provider ([providers.NAME])", l.DestinationProvider)
		}
		id := l.Key + "/" + l.DestinationProvider + "/" + l.Window.String()
		if j, dup := seen[id]; dup {
			p.add(key, "has the key, destination_provider and window of limits[%d]: the two would share one counter", j)
		}
		seen[id] = i
	}
	k := c.Compromise
	if k.Enabled {
		atLeast(p, "compromise.max_countries", k.MaxCountries, 1)
		atLeast(p, "compromise.max_clients", k.MaxClients, 1)
		positive(p, "compromise.window", k.Window)
	}
	if k.Failures {
		if k.FailureRatio <= 0 || k.FailureRatio > 1 {
			p.add("compromise.failure_ratio", "must be above 0 and at most 1 (0.5: half the results failed)")
		}
		atLeast(p, "compromise.failure_min", k.FailureMin, 1)
		if k.FailureMin > maxFailureMin {
			p.add("compromise.failure_min", "must be at most %d (the results kept per account)", maxFailureMin)
		}
		positive(p, "compromise.failure_window", k.FailureWindow)
		if !c.Learn.Enabled {
			p.add("compromise.failures", "needs learn.enabled: the delivery results come from the learner")
		}
	}
	if (len(c.Limits) > 0 || k.Enabled || k.Failures) && !c.Learn.Enabled && !filepath.IsAbs(c.Learn.StateFile) {
		p.add("learn.state_file", "must be an absolute path: limits keep their counters in limits.json beside it")
	}
}

// maxFailureMin is policyd/limits' MaxFailureMin (config imports no
// daemon package).
const maxFailureMin = 1000

// limitKeys are the keys of [[limits]], and the prefixes of the keys that
// exempt and raise name.
var limitKeys = []string{"sasl_username", "sender", "client_address", "sender_domain", "local_user"}

// validateLimitKeys checks a limit's exempt and raise: each names a key
// as `holds` lists it, "local_user:newsletter", once.
func validateLimitKeys(p *parser, key string, l *Limit) {
	seen := map[string]string{}
	check := func(where, k string) {
		kind, v, _ := strings.Cut(k, ":")
		switch {
		case !slices.Contains(limitKeys, kind) || v == "":
			p.add(where, "%q is not KEY:VALUE with KEY one of %s", k, quoteList(limitKeys))
		case seen[k] != "":
			p.add(where, "%q is named in %s too", k, seen[k])
		}
		seen[k] = where
	}
	for i, k := range l.Exempt {
		check(fmt.Sprintf("%s.exempt[%d]", key, i), k)
	}
	for _, k := range slices.Sorted(maps.Keys(l.Raise)) {
		where := fmt.Sprintf("%s.raise.%q", key, k)
		check(where, k)
		atLeast(p, where, l.Raise[k], 1)
	}
}

// validateFleet checks [fleet]; the URL is never quoted (a password).
func (c *Config) validateFleet(p *parser) {
	f := c.Fleet
	oneOf(p, "fleet.share", f.Share, "all", "own")
	if strings.ContainsFunc(f.Name, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		p.add("fleet.name", "%q has spaces or control characters", f.Name)
	}
	if f.PasswordFile != "" && !filepath.IsAbs(f.PasswordFile) {
		p.add("fleet.password_file", "%q is not an absolute path", f.PasswordFile)
	}
	if f.RedisURL == "" {
		return
	}
	// Never quote the URL: it may carry a password.
	u, err := url.Parse(f.RedisURL)
	switch {
	case err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "":
		p.add("fleet.redis_url", "is not a redis:// or rediss:// URL with a host (such as \"redis://10.0.0.5:6379/0\")")
	case !c.Learn.Enabled:
		p.add("fleet.redis_url", "shares learned blocks: it needs learn.enabled = true")
	case f.Share == "own" && len(c.Self.IPv4)+len(c.Self.IPv6) == 0:
		p.add("fleet.share", "\"own\" applies the blocks of our own addresses: list them in self.ipv4 and self.ipv6")
	}
}

// validateGeo checks [milter.geo] and its rule table.
func (c *Config) validateGeo(p *parser) {
	g := &c.Milter.Geo
	countryCodes(p, "milter.geo.block_countries", g.BlockCountries, false)
	needSource := ""
	if len(g.BlockCountries) > 0 {
		needSource = "block_countries is"
	}
	for i := range g.Rules {
		if g.validateRule(p, i) && needSource == "" {
			needSource = fmt.Sprintf("rules[%d] names countries", i)
		}
		if len(g.Rules[i].ASNs) > 0 && g.DNSZone == "" {
			p.add(fmt.Sprintf("milter.geo.rules[%d].asns", i), "AS numbers are looked up in milter.geo.dns_zone: set it (e.g. \"origin.asn.cymru.com\")")
		}
	}
	if g.Reply != "" {
		smtpReply(p, "milter.geo.reply", g.Reply)
	}
	if g.MaxAge.Duration < 0 {
		p.add("milter.geo.max_age", "must not be negative (0 = never warn)")
	}
	switch g.Source {
	case "":
		if needSource != "" {
			p.add("milter.geo.source", "must be set (\"mmdb\", \"delegated\" or \"dns\") when %s", needSource)
		}
	case "mmdb":
		if g.MMDBFile == "" {
			p.add("milter.geo.mmdb_file", "must be set when source is \"mmdb\"")
		}
	case "delegated":
		if len(g.DelegatedFiles) == 0 {
			p.add("milter.geo.delegated_files", "must list at least one file when source is \"delegated\"")
		}
	case "dns":
		if g.DNSZone == "" {
			p.add("milter.geo.dns_zone", "must be set when source is \"dns\"")
		}
	default:
		oneOf(p, "milter.geo.source", g.Source, "mmdb", "delegated", "dns")
	}
}

// validateRule checks [[milter.geo.rules]] number i; it reports whether
// the rule names countries (and so needs a source).
func (g *Geo) validateRule(p *parser, i int) bool {
	r := &g.Rules[i]
	key := fmt.Sprintf("milter.geo.rules[%d]", i)
	if len(r.Countries) == 0 && len(r.ASNs) == 0 && len(r.Networks) == 0 {
		p.add(key, "matches nothing: give countries, asns or networks")
	}
	countryCodes(p, key+".countries", r.Countries, true)
	if r.Allow {
		if r.Action != "" {
			p.add(key+".action", "an allow rule admits: it takes no action (remove it, or allow)")
		}
		if r.Reply != "" {
			p.add(key+".reply", "an allow rule refuses nothing: it takes no reply")
		}
	} else {
		if r.Action == "" {
			r.Action = "refuse"
		}
		oneOf(p, key+".action", r.Action, "refuse", "log")
		if r.Reply != "" {
			smtpReply(p, key+".reply", r.Reply)
		}
	}
	return len(r.Countries) > 0
}

// countryCodes checks and upper-cases ISO 3166 alpha-2 codes; "*" (any
// country) where star is true.
func countryCodes(p *parser, key string, l []string, star bool) {
	for i, cc := range l {
		up := strings.ToUpper(cc)
		switch {
		case star && cc == "*":
		case len(cc) != 2 || up[0] < 'A' || up[0] > 'Z' || up[1] < 'A' || up[1] > 'Z':
			p.add(key, "%q is not a two-letter country code", cc)
		}
		l[i] = up
	}
}

// smtpReply checks a refusal: a 5xx code, a space, the matching enhanced
// status 5.x.y (RFC 3463), a space and a text, on one line.
func smtpReply(p *parser, key, v string) {
	code, rest, _ := strings.Cut(v, " ")
	status, text, _ := strings.Cut(rest, " ")
	parts := strings.Split(status, ".")
	ok := len(code) == 3 && code[0] == '5' && isDigits(code) && len(parts) == 3 && parts[0] == "5" &&
		isDigits(parts[1]) && len(parts[1]) <= 3 && isDigits(parts[2]) && len(parts[2]) <= 3 &&
		strings.TrimSpace(text) != "" && !strings.ContainsAny(v, "\r\n")
	if !ok {
		p.add(key, "%q is not a refusal such as \"550 5.7.1 Mail from your network is not accepted here\" (5xx code, 5.x.y status, text)", v)
	}
}

func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}
