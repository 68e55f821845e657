// Package config holds the one TOML file both mxdetour daemons read
// (/etc/mxdetour/mxdetour.toml): its schema, its defaults (Default is the
// only source of them) and its validation.
package config

import (
	"net/netip"
	"time"
)

// DefaultPath is where both daemons look for their configuration when no
// -config flag is given. A missing file there means "run on Default()".
const DefaultPath = "/etc/mxdetour/mxdetour.toml"

// Config is the whole file. Each daemon reads the sections it needs.
type Config struct {
	Log        Log                 `toml:"log"`
	DNS        DNS                 `toml:"dns"`
	Domains    Domains             `toml:"domains"`
	Policyd    Policyd             `toml:"policyd"`
	Transports Transports          `toml:"transports"`
	Self       Self                `toml:"self"`
	DNSBL      DNSBL               `toml:"dnsbl"`
	Providers  map[string]Provider `toml:"providers"`
	Rules      []Rule              `toml:"rules"`
	Learn      Learn               `toml:"learn"`
	Milter     Milter              `toml:"milter"`
	Metrics    Metrics             `toml:"metrics"`
	Alerts     Alerts              `toml:"alerts"`
	Limits     []Limit             `toml:"limits"`
	Compromise Compromise          `toml:"compromise"`
	Fleet      Fleet               `toml:"fleet"`
}

// Duration is a time.Duration written in TOML as a string ("30s", "5m").
type Duration struct{ time.Duration }

// Log configures the zap logger both daemons build at start.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // console or json
}

// DNS configures internal/lookup.
type DNS struct {
	Servers        []string `toml:"servers"` // host:port; empty = nameservers of /etc/resolv.conf
	Timeout        Duration `toml:"timeout"` // per query attempt
	Attempts       int      `toml:"attempts"`
	CacheSize      int      `toml:"cache_size"`       // entries
	MinTTL         Duration `toml:"min_ttl"`          // positive answers are kept at least this long
	MaxTTL         Duration `toml:"max_ttl"`          // ... and at most this long
	NegativeMaxTTL Duration `toml:"negative_max_ttl"` // cap on NXDOMAIN/NODATA (RFC 2308)
	ErrorTTL       Duration `toml:"error_ttl"`        // SERVFAIL and timeouts
	StaleTTL       Duration `toml:"stale_ttl"`        // how long an expired answer may be served while upstream fails (RFC 8767)
	ASNZone        string   `toml:"asn_zone"`         // origin-ASN TXT service for IPv4
	ASN6Zone       string   `toml:"asn6_zone"`        // ... and for IPv6
}

// Domains lists domains both daemons treat specially.
type Domains struct {
	Reserved []string `toml:"reserved"` // added to the built-in RFC 2606/6761 names
	Local    []string `toml:"local"`    // our own domains: never routed by policyd
	// FromPostfix adds the domains Postfix delivers itself (mydestination,
	// virtual alias and mailbox domains, relay_domains), read with
	// postconf at start and reload, to Local.
	FromPostfix bool `toml:"from_postfix"`
}

// Policyd configures mxdetour-policyd's listeners and decisions.
type Policyd struct {
	PolicyListen    string   `toml:"policy_listen"`    // host:port or unix:/path; "" disables
	SocketmapListen string   `toml:"socketmap_listen"` // host:port or unix:/path; "" disables
	SocketMode      string   `toml:"socket_mode"`      // octal mode of unix sockets
	DecisionTimeout Duration `toml:"decision_timeout"` // every answer comes within this
	IdleTimeout     Duration `toml:"idle_timeout"`     // close a client connection idle this long
	MaxRequestSize  int      `toml:"max_request_size"` // bytes
	MaxConnections  int      `toml:"max_connections"`
	NullMX          string   `toml:"null_mx"` // "direct" or "reject" (socketmap error:5.1.10)
	// OnDNSFailure is the socketmap answer when the recipient domain's MX
	// lookup fails (SERVFAIL, timeout, or slower than DecisionTimeout):
	// "temp" (the default) answers TEMP, so the queue manager defers the
	// recipient and asks again on its next queue run, when DNS may be back;
	// "direct" answers NOTFOUND, so the mail goes Postfix's default way at
	// once, perhaps to a provider that refuses it. TEMP is safe only with
	// the recommended wiring of contrib/postfix, where smtpd resolves
	// through a trivial-rewrite without the socketmap: otherwise smtpd
	// answers "451 4.3.0" at RCPT and keeps answering it from its own
	// resolver cache for minutes. The policy protocol answers DUNNO either way.
	OnDNSFailure string `toml:"on_dns_failure"`
}

// Transports maps route names to Postfix transport:nexthop values.
type Transports struct {
	Relay string `toml:"relay"` // e.g. "relay:[mx03.example.net]:587"; empty = dry run
	IPv4  string `toml:"ipv4"`  // e.g. "smtp-ipv4:"; empty = use the relay instead
}

// Self names our own outbound addresses, checked against DNS blocklists.
type Self struct {
	IPv4          []netip.Addr `toml:"ipv4"` // empty = the host's global-scope addresses
	IPv6          []netip.Addr `toml:"ipv6"`
	CheckInterval Duration     `toml:"check_interval"`
	HeloName      string       `toml:"helo_name"` // Postfix's smtp_helo_name, checked by mxdetour-milter doctor; "" = not checked
}

// DNSBL configures how blocklist answers are read (RFC 5782).
type DNSBL struct {
	ErrorCodes     []netip.Prefix            `toml:"error_codes"`      // answers that are errors, never listings, for every zone
	ZoneErrorCodes map[string][]netip.Prefix `toml:"zone_error_codes"` // zone -> more error codes
}

// DefaultProvider is the built-in provider that matches every destination
// no other provider claims.
const DefaultProvider = "default"

// Provider is a mail provider recognised by MX host name or network; the
// one named DefaultProvider matches every other destination.
type Provider struct {
	Enabled    bool     `toml:"enabled"`
	MXSuffixes []string `toml:"mx_suffixes"` // matched on label boundaries
	ASNs       []uint32 `toml:"asns"`
	Zones      []string `toml:"zones"` // blocklists this provider is known to use
	Route      string   `toml:"route"` // "always", "when-listed", "ipv4-when-listed" or "never"
}

// Rule is a static routing rule; rules are tried in file order.
type Rule struct {
	Domain  string `toml:"domain"`  // the domain and its subdomains
	Address string `toml:"address"` // or one recipient address
	Route   string `toml:"route"`   // "direct", "relay", "ipv4"
}

// Learn configures learning blocks from Postfix's delivery log.
type Learn struct {
	Enabled bool `toml:"enabled"`
	// Source is where refusals are learned from: "journal" (Postfix's
	// records, by the journal's trusted _UID), "file" (log_file, whose
	// lines any local user can forge through syslog) or "auto": the
	// journal where it is readable and Postfix logs to it, else the file.
	Source         string   `toml:"source"`
	LogFile        string   `toml:"log_file"`
	StateFile      string   `toml:"state_file"`
	BlockTTL       Duration `toml:"block_ttl"`
	Patterns       []string `toml:"patterns"`        // extra regular expressions that mean "our IP is blocked"
	IgnorePatterns []string `toml:"ignore_patterns"` // regular expressions that never mean it
	Requeue        bool     `toml:"requeue"`         // postqueue -i the deferred messages a block named
	Postsuper      string   `toml:"postsuper"`
	PostfixConfig  string   `toml:"postfix_config"` // -c DIR for postsuper and postqueue; "" = Postfix's default
}

// Milter configures mxdetour-milter.
type Milter struct {
	Listen          string         `toml:"listen"`
	SocketMode      string         `toml:"socket_mode"`
	OnError         string         `toml:"on_error"` // "accept" or "tempfail"
	TrustedNetworks []netip.Prefix `toml:"trusted_networks"`
	// MaxMessageSize is accepted and ignored: the milter streams the body
	// and needs no limit of its own. Kept so that files written for earlier
	// versions (the packaged mxdetour.toml is kept on upgrade) still load.
	MaxMessageSize int64 `toml:"max_message_size"`
	RejectReserved bool  `toml:"reject_reserved"`
	// PolicydListen is where the milter asks policyd's policy service to
	// count the mail of local accounts (the sendmail command) against
	// [[limits]]: host:port, unix:/path or unix:@name (an abstract
	// socket); "" = policyd.policy_listen.
	PolicydListen string `toml:"policyd_listen"`
	DKIM          DKIM   `toml:"dkim"`
	Geo           Geo    `toml:"geo"`
}

// DKIM configures signing (RFC 6376, RFC 8463).
type DKIM struct {
	SignAuthenticated  bool      `toml:"sign_authenticated"`
	SignTrusted        bool      `toml:"sign_trusted"`
	Canonicalization   string    `toml:"canonicalization"` // header/body: relaxed/relaxed
	Headers            []string  `toml:"headers"`          // signed once if present
	OversignHeaders    []string  `toml:"oversign_headers"` // signed once more than present
	AllowGroupReadable bool      `toml:"allow_group_readable_keys"`
	RotationOverlap    Duration  `toml:"rotation_overlap"`    // old keys sign beside a newly published one this long
	RotationStateFile  string    `toml:"rotation_state_file"` // when each key was first seen published; "" = memory only
	RotationSelectors  string    `toml:"rotation_selectors"`  // "generations" (mail, mail2, mail3) or "alternate" (s1, s2, s1, ...)
	KeyDir             string    `toml:"key_dir"`             // key files found by name, read at start and reload; "" = none
	KeyFileTemplate    string    `toml:"key_file_template"`   // their names: {domain} and {selector}
	DefaultDomain      string    `toml:"default_domain"`      // signs mail of domains without keys of their own; "" = none
	Keys               []DKIMKey `toml:"keys"`
}

// DKIMKey is one row of the key table.
type DKIMKey struct {
	Domain     string `toml:"domain"`
	Selector   string `toml:"selector"`
	KeyFile    string `toml:"key_file"`
	Subdomains bool   `toml:"subdomains"` // also sign for subdomains of Domain
}

// Geo configures the country block.
type Geo struct {
	BlockCountries []string       `toml:"block_countries"` // ISO 3166 alpha-2
	Allow          []netip.Prefix `toml:"allow"`
	Source         string         `toml:"source"` // "", "mmdb", "delegated", "dns"
	MMDBFile       string         `toml:"mmdb_file"`
	DelegatedFiles []string       `toml:"delegated_files"`
	DNSZone        string         `toml:"dns_zone"`  // TXT "ASN | prefix | CC | ..." for IPv4
	DNS6Zone       string         `toml:"dns6_zone"` // ... and IPv6
	// Reply is the refusal of every rule without a reply of its own,
	// "550 5.7.1 text"; "" = "550 5.7.1 Client host rejected: mail from
	// your country (CC) is not accepted here" (or "your network").
	Reply string `toml:"reply"`
	// MaxAge warns (log, doctor) when the country data is older; 0 = never.
	MaxAge Duration `toml:"max_age"`
	// Rules are applied in the order written, the first match deciding,
	// after the exemptions; block_countries is one more block rule after
	// them.
	Rules []GeoRule `toml:"rules"`
}

// GeoRule is one [[milter.geo.rules]] row. It matches a client when any
// one of countries, asns and networks does.
type GeoRule struct {
	Countries []string       `toml:"countries"` // ISO 3166 alpha-2; "*" = any country the source knows
	ASNs      []uint32       `toml:"asns"`      // origin AS, from dns_zone/dns6_zone
	Networks  []netip.Prefix `toml:"networks"`
	Allow     bool           `toml:"allow"`  // admit, and ask no later rule
	Action    string         `toml:"action"` // block rules: "refuse" (default) or "log" (refuse nothing, log it)
	Reply     string         `toml:"reply"`  // "" = milter.geo.reply
}

// Alerts says how the postmaster is told of learned blocks, listings and
// route changes (internal/alert). Without mail_to and webhook_url events
// are only logged, at warning.
type Alerts struct {
	MailTo     string   `toml:"mail_to"`     // e.g. "postmaster@example.net"; "" = no mail
	From       string   `toml:"from"`        // sender of alert mail; "" = the daemon's user
	Sendmail   string   `toml:"sendmail"`    // Postfix's sendmail command
	WebhookURL string   `toml:"webhook_url"` // JSON POST of each alert; "" = none
	Interval   Duration `toml:"interval"`    // at most one alert per interval; later events are grouped
}

// Limit is one outbound limit of mxdetour-policyd ([[limits]]): at most
// Max recipients per sliding Window for each sender Key names. Only mail
// of SASL-authenticated clients, of milter.trusted_networks (without a
// login, by sender where Key is sasl_username) and of local accounts
// (the sendmail command, counted through mxdetour-milter; by account
// where Key is sasl_username) is counted. Counters are kept in
// limits.json next to learn.state_file.
type Limit struct {
	Key                 string   `toml:"key"`                  // "sasl_username", "sender", "client_address", "sender_domain" or "local_user"
	Max                 int      `toml:"max"`                  // recipients in window
	Window              Duration `toml:"window"`               // e.g. "1h"
	DestinationProvider string   `toml:"destination_provider"` // count only recipients at this provider; "" = all
	Action              string   `toml:"action"`               // "HOLD" (default), "DEFER" (450 4.7.1) or "REJECT" (550 5.7.1)
	// Exempt lists keys this limit does not count, Raise keys with a max
	// of their own, each written as `holds` lists it: "local_user:newsletter".
	Exempt []string       `toml:"exempt"`
	Raise  map[string]int `toml:"raise"`
}

// Compromise is the compromise signal of mxdetour-policyd: one SASL login
// used from more than MaxCountries countries (needs a [milter.geo] source)
// or MaxClients client networks (/24, /48) within Window holds its mail
// and alerts.
//
// Failures, independently of Enabled, turns on the failure-ratio signal:
// an account (SASL login, local account, else sender) whose delivery
// results within FailureWindow fail at FailureRatio or above, with at
// least FailureMin results, has its mail held and the postmaster alerted.
// Refusals of our own address do not count.
type Compromise struct {
	Enabled       bool     `toml:"enabled"`
	MaxCountries  int      `toml:"max_countries"`
	MaxClients    int      `toml:"max_clients"`
	Window        Duration `toml:"window"`
	Failures      bool     `toml:"failures"`
	FailureRatio  float64  `toml:"failure_ratio"`
	FailureMin    int      `toml:"failure_min"`
	FailureWindow Duration `toml:"failure_window"`
}

// Fleet shares the blocks each MX host learns with the others through
// Redis (policyd/fleet). Off while RedisURL is empty.
type Fleet struct {
	// RedisURL: redis://[user:password@]host:port/db, rediss:// for TLS;
	// with ?master_name=NAME the host is a Sentinel, with &addr=host:port
	// more Sentinels or (without master_name) more Cluster nodes.
	RedisURL     string `toml:"redis_url"`
	PasswordFile string `toml:"password_file"` // the password, instead of the URL's; read at start
	Name         string `toml:"name"`          // this host in shared records; "" = its host name
	Share        string `toml:"share"`         // "all" blocks, or only those of our "own" addresses
}

// Metrics configures the Prometheus endpoint (off when Listen is empty).
type Metrics struct {
	PolicydListen string `toml:"policyd_listen"`
	MilterListen  string `toml:"milter_listen"`
	// Pprof also serves Go's profiles (net/http/pprof) under
	// /debug/pprof/ on both endpoints, to find where the time goes.
	Pprof bool `toml:"pprof"`
}

// MilterPolicyd is where mxdetour-milter asks policyd's policy service
// to count the mail of local accounts: milter.policyd_listen, else
// policyd.policy_listen ("" when neither is set).
func (c *Config) MilterPolicyd() string {
	if c.Milter.PolicydListen != "" {
		return c.Milter.PolicydListen
	}
	return c.Policyd.PolicyListen
}

func d(s string) Duration {
	v, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return Duration{v}
}

// Default returns the configuration used for every key the file leaves out.
// It is the only place defaults are written.
func Default() *Config {
	return &Config{
		Log: Log{Level: "info", Format: "console"},
		DNS: DNS{
			Timeout:        d("2s"),
			Attempts:       2,
			CacheSize:      100000,
			MinTTL:         d("30s"),
			MaxTTL:         d("24h"),
			NegativeMaxTTL: d("1h"),
			ErrorTTL:       d("5s"),
			StaleTTL:       d("1h"),
			ASNZone:        "origin.asn.cymru.com",
			ASN6Zone:       "origin6.asn.cymru.com",
		},
		Policyd: Policyd{
			PolicyListen:    "127.0.0.1:10040",
			SocketmapListen: "127.0.0.1:10041",
			SocketMode:      "0660",
			DecisionTimeout: d("500ms"),
			IdleTimeout:     d("330s"),
			MaxRequestSize:  64 << 10,
			MaxConnections:  1000,
			NullMX:          "direct",
			OnDNSFailure:    "temp",
		},
		Domains: Domains{FromPostfix: true},
		Self:    Self{CheckInterval: d("5m")},
		DNSBL: DNSBL{
			ErrorCodes: []netip.Prefix{netip.MustParsePrefix("127.255.255.0/24")},
		},
		Providers: map[string]Provider{
			// Everyone else: force IPv4 while only our IPv6 address is
			// listed, the commonest listing (a /64 on Spamhaus).
			DefaultProvider: {
				Enabled: true,
				Zones:   []string{"zen.spamhaus.org"},
				Route:   "ipv4-when-listed",
			},
			"google": {
				Enabled:    true,
				MXSuffixes: []string{"google.com", "googlemail.com"},
				ASNs:       []uint32{15169},
				Zones:      []string{"zen.spamhaus.org"},
				Route:      "always",
			},
			"microsoft": {
				Enabled: true,
				MXSuffixes: []string{"outlook.com", "protection.outlook.com", "hotmail.com", "mx.microsoft",
					"protection.office365.us", "protection.partner.outlook.cn"},
				ASNs:  []uint32{8075},
				Zones: []string{"zen.spamhaus.org"},
				Route: "always",
			},
		},
		Alerts: Alerts{Sendmail: "/usr/sbin/sendmail", Interval: d("15m")},
		Compromise: Compromise{MaxCountries: 3, MaxClients: 10, Window: d("1h"),
			FailureRatio: 0.5, FailureMin: 30, FailureWindow: d("1h")},
		Fleet: Fleet{Share: "all"},
		Learn: Learn{
			Enabled:   true,
			Source:    "auto",
			LogFile:   "/var/log/mail.log",
			StateFile: "/var/lib/mxdetour/state.json",
			BlockTTL:  d("24h"),
			Postsuper: "/usr/sbin/postsuper",
		},
		Milter: Milter{
			Listen:          "127.0.0.1:10042",
			SocketMode:      "0660",
			OnError:         "accept",
			TrustedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
			RejectReserved:  true,
			DKIM: DKIM{
				SignAuthenticated: true,
				SignTrusted:       true,
				Canonicalization:  "relaxed/relaxed",
				// RFC 6376 section 5.4.1.
				Headers: []string{"From", "Reply-To", "Subject", "Date", "To", "Cc", "Resent-Date",
					"Resent-From", "Resent-To", "Resent-Cc", "In-Reply-To", "References", "List-Id",
					"List-Help", "List-Unsubscribe", "List-Subscribe", "List-Post", "List-Owner",
					"List-Archive", "Message-ID", "MIME-Version", "Content-Type",
					"Content-Transfer-Encoding", "Sender"},
				OversignHeaders: []string{"From", "To", "Cc", "Subject", "Date", "Reply-To", "Message-ID",
					"MIME-Version", "Content-Type", "Content-Transfer-Encoding"},
				// Above Postfix's maximal_queue_lifetime (5d): when the old key
				// stops, every queued message also has the new signature.
				RotationOverlap:   d("168h"),
				RotationStateFile: "/var/lib/mxdetour/dkim-rotation.json",
				RotationSelectors: "generations",
				// The name keygen gives a key file.
				KeyFileTemplate: "{domain}.{selector}.key",
			},
			Geo: Geo{
				DNSZone:  "origin.asn.cymru.com",
				DNS6Zone: "origin6.asn.cymru.com",
				// GeoLite2 and DB-IP are rebuilt monthly at least, the RIR
				// files daily: a month-old file is no longer updated.
				MaxAge: d("720h"),
			},
		},
	}
}
