package config

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
var prefixCmp = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

func TestExampleIsDefault(t *testing.T) {
	data, err := os.ReadFile("../../contrib/mxdetour.toml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse("mxdetour.toml", data)
	if err != nil {
		t.Fatalf("contrib/mxdetour.toml: %v", err)
	}
	if diff := cmp.Diff(Default(), got, addrCmp, prefixCmp); diff != "" {
		t.Errorf("contrib/mxdetour.toml differs from Default() (-default +file):\n%s", diff)
	}
	empty, err := Parse("empty.toml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Default(), empty, addrCmp, prefixCmp); diff != "" {
		t.Errorf("an empty file differs from Default():\n%s", diff)
	}
	if err := Default().Validate(); err != nil {
		t.Errorf("Default() does not validate: %v", err)
	}
}

func TestErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"unknown key", "[dns]\ntimeout = \"1s\"\ntimout = \"2s\"\n",
			"x.toml:3: dns.timout: unknown key (did you mean dns.timeout?)"},
		{"unknown section", "\n[polcyd]\nfoo = 1\n",
			"x.toml:2: polcyd: unknown key (did you mean policyd?)"},
		{"bad duration", "[dns]\ntimeout = \"5 minutes\"\n",
			`x.toml:2: dns.timeout: not a duration (write it like "30s", "5m" or "24h")`},
		{"bad address", "[self]\nipv4 = [\"300.1.1.1\"]\n",
			`x.toml:2: self.ipv4: "300.1.1.1" is not an IP address`},
		{"bad network", "[milter]\ntrusted_networks = [\"10.0.0.0/33\"]\n",
			`x.toml:2: milter.trusted_networks: "10.0.0.0/33" is not a network such as "192.0.2.0/24"`},
		{"wrong type", "[dns]\nattempts = \"two\"\n",
			"x.toml:2: dns.attempts: expected a whole number"},
		{"bad route", "[[rules]]\ndomain = \"a.example\"\nroute = \"relai\"\n",
			`x.toml:3: rules[0].route: "relai" is not one of "direct", "relay", "ipv4"`},
		{"second rule", "[[rules]]\ndomain = \"a.example\"\nroute = \"relay\"\n\n[[rules]]\nroute = \"relay\"\n",
			"x.toml:5: rules[1]: needs exactly one of domain or address"},
		{"bad listen", "[policyd]\npolicy_listen = \"localhost\"\n",
			`x.toml:2: policyd.policy_listen: "localhost" is neither host:port nor unix:/path`},
		{"milter's policyd address", "[milter]\npolicyd_listen = \"unix:@\"\n[[limits]]\nkey = \"local_user\"\nmax = 5\nwindow = \"1h\"\n",
			`x.toml:2: milter.policyd_listen: "unix:@": an abstract unix socket needs a name (unix:@mxdetour-policy)`},
		{"milter's policyd address relative", "[milter]\npolicyd_listen = \"unix:private/mxdetour-policy\"\n",
			`x.toml:2: milter.policyd_listen: "unix:private/mxdetour-policy": a unix socket needs an absolute path (unix:/run/mxdetour/x.sock)`},
		{"provider route", "[providers.google]\nroute = \"sometimes\"\n",
			`x.toml:2: providers.google.route: "sometimes" is not one of "always", "when-listed", "ipv4-when-listed", "never"`},
		{"dkim key row", "[[milter.dkim.keys]]\ndomain = \"example.org\"\nselector = \"s1\"\n",
			"x.toml:1: milter.dkim.keys[0].key_file: must be set"},
		{"rotation", "[milter.dkim]\nrotation_overlap = \"-1h\"\nrotation_state_file = \"state.json\"\n",
			"x.toml:2: milter.dkim.rotation_overlap: must not be negative\n" +
				"x.toml:3: milter.dkim.rotation_state_file: must be an absolute path (or \"\" to keep it in memory)"},
		{"syntax", "[dns]\ntimeout = \n",
			"x.toml:2: syntax error: expected value but found '\\n' instead"},
		{"several at once", "[log]\nlevel = \"loud\"\n[dns]\ntimeout = \"x\"\nbogus = 1\n",
			"x.toml:2: log.level: \"loud\" is not one of \"debug\", \"info\", \"warn\", \"error\"\n" +
				"x.toml:4: dns.timeout: not a duration (write it like \"30s\", \"5m\" or \"24h\")\n" +
				"x.toml:5: dns.bogus: unknown key"},
		{"alerts", "[alerts]\nmail_to = \"Postmaster <pm@example.net>\"\nwebhook_url = \"ftp://hook.example.net/\"\n",
			"x.toml:2: alerts.mail_to: \"Postmaster <pm@example.net>\" is not one plain mail address (like \"postmaster@example.net\")\n" +
				"x.toml:3: alerts.webhook_url: \"ftp://hook.example.net/\" is not an http:// or https:// URL"},
		{"limits", "[[limits]]\nkey = \"login\"\nmax = 0\nwindow = \"1h\"\naction = \"hold\"\ndestination_provider = \"yahoo\"\n",
			"x.toml:2: limits[0].key: \"login\" is not one of \"sasl_username\", \"sender\", \"client_address\", \"sender_domain\", \"local_user\"\n" +
				"x.toml:3: limits[0].max: must be at least 1\n" +
				"x.toml:6: limits[0].destination_provider: \"yahoo\" is not an enabled provider ([providers.NAME])"},
		{"limits share a counter", "[[limits]]\nkey = \"sender\"\nmax = 5\nwindow = \"1h\"\n[[limits]]\nkey = \"sender\"\nmax = 9\nwindow = \"1h\"\n",
			"x.toml:5: limits[1]: has the key, destination_provider and window of limits[0]: the two would share one counter"},
		{"limits exempt and raise", "[[limits]]\nkey = \"local_user\"\nmax = 5\nwindow = \"1h\"\n" +
			"exempt = [\"local_user:news\", \"newsletter\", \"login:x\"]\nraise = { \"local_user:news\" = 9, \"sender:\" = 2, \"local_user:bulk\" = 0 }\n",
			"x.toml:5: limits[0].exempt[1]: \"newsletter\" is not KEY:VALUE with KEY one of \"sasl_username\", \"sender\", \"client_address\", \"sender_domain\", \"local_user\"\n" +
				"x.toml:5: limits[0].exempt[2]: \"login:x\" is not KEY:VALUE with KEY one of \"sasl_username\", \"sender\", \"client_address\", \"sender_domain\", \"local_user\"\n" +
				"x.toml:6: limits[0].raise.\"local_user:bulk\": must be at least 1\n" +
				"x.toml:6: limits[0].raise.\"local_user:news\": \"local_user:news\" is named in limits[0].exempt[0] too\n" +
				"x.toml:6: limits[0].raise.\"sender:\": \"sender:\" is not KEY:VALUE with KEY one of \"sasl_username\", \"sender\", \"client_address\", \"sender_domain\", \"local_user\""},
		{"limits raise not numbers", "[[limits]]\nkey = \"sender\"\nmax = 5\nwindow = \"1h\"\nraise = { \"sender:a@b.example\" = \"lots\" }\n",
			"x.toml:5: limits[0].raise: expected a table of whole numbers, such as { \"sasl_username:bulk\" = 1000 }"},
		{"compromise", "[compromise]\nenabled = true\nmax_clients = 0\n",
			"x.toml:3: compromise.max_clients: must be at least 1"},
		{"fleet", "[fleet]\nredis_url = \"http://u:secret@10.0.0.5/\"\nshare = \"some\"\nname = \"mx 01\"\n",
			"x.toml:2: fleet.redis_url: is not a redis:// or rediss:// URL with a host (such as \"redis://10.0.0.5:6379/0\")\n" +
				"x.toml:3: fleet.share: \"some\" is not one of \"all\", \"own\"\n" +
				"x.toml:4: fleet.name: \"mx 01\" has spaces or control characters"},
		{"fleet own without self", "[fleet]\nredis_url = \"redis://10.0.0.5:6379/0\"\nshare = \"own\"\n",
			`x.toml:3: fleet.share: "own" applies the blocks of our own addresses: list them in self.ipv4 and self.ipv6`},
		{"fleet without learning", "[learn]\nenabled = false\n[fleet]\nredis_url = \"redis://10.0.0.5:6379/0\"\n",
			`x.toml:4: fleet.redis_url: shares learned blocks: it needs learn.enabled = true`},
		{"geo without source", "[milter.geo]\nblock_countries = [\"ru\"]\n",
			`x.toml:1: milter.geo.source: must be set ("mmdb", "delegated" or "dns") when block_countries is`},
		{"geo rules", "[milter.geo]\nreply = \"450 4.7.1 later\"\n" +
			"[[milter.geo.rules]]\ncountries = [\"R\", \"*\"]\naction = \"drop\"\n" +
			"[[milter.geo.rules]]\nallow = true\naction = \"log\"\nreply = \"550 5.7.1 x\"\nnetworks = [\"192.0.2.0/24\"]\n" +
			"[[milter.geo.rules]]\nasns = [64496]\nreply = \"550 5.7 no\"\n" +
			"[[milter.geo.rules]]\nreply = \"550 5.7.1 Mail from your network is not accepted here\"\n",
			"x.toml:1: milter.geo.source: must be set (\"mmdb\", \"delegated\" or \"dns\") when rules[0] names countries\n" +
				"x.toml:2: milter.geo.reply: \"450 4.7.1 later\" is not a refusal such as \"550 5.7.1 Mail from your network is not accepted here\" (5xx code, 5.x.y status, text)\n" +
				"x.toml:4: milter.geo.rules[0].countries: \"R\" is not a two-letter country code\n" +
				"x.toml:5: milter.geo.rules[0].action: \"drop\" is not one of \"refuse\", \"log\"\n" +
				"x.toml:8: milter.geo.rules[1].action: an allow rule admits: it takes no action (remove it, or allow)\n" +
				"x.toml:9: milter.geo.rules[1].reply: an allow rule refuses nothing: it takes no reply\n" +
				"x.toml:13: milter.geo.rules[2].reply: \"550 5.7 no\" is not a refusal such as \"550 5.7.1 Mail from your network is not accepted here\" (5xx code, 5.x.y status, text)\n" +
				"x.toml:14: milter.geo.rules[3]: matches nothing: give countries, asns or networks"},
		{"geo max_age", "[milter.geo]\nmax_age = \"-1h\"\n", "x.toml:2: milter.geo.max_age: must not be negative (0 = never warn)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.toml", []byte(tc.in))
			if err == nil {
				t.Fatal("no error")
			}
			got := sortedLines(err.Error())
			if diff := cmp.Diff(sortedLines(tc.want), got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// sortedLines compares multi-error messages independent of map order.
func sortedLines(s string) []string {
	l := strings.Split(s, "\n")
	for i := range l {
		for j := i + 1; j < len(l); j++ {
			if l[j] < l[i] {
				l[i], l[j] = l[j], l[i]
			}
		}
	}
	return l
}

// TestErrorOrderAndLines: problems come in the order of the file (not the
// order the checks run in, nor map order), dotted and inline keys carry
// their line, and a misspelt key gets a suggestion.
func TestErrorOrderAndLines(t *testing.T) {
	in := "[policyd]\non_dns_failure = \"maybe\"\n[log]\nlevel = \"loud\"\n" +
		"[milter]\ndkim.canonicalisation = \"relaxed/relaxed\"\ngeo = { sorce = \"mmdb\" }\n" +
		"[dns]\ntimout = \"2s\"\n"
	want := "x.toml:2: policyd.on_dns_failure: \"maybe\" is not one of \"direct\", \"temp\"\n" +
		"x.toml:4: log.level: \"loud\" is not one of \"debug\", \"info\", \"warn\", \"error\"\n" +
		"x.toml:6: milter.dkim.canonicalisation: unknown key (did you mean milter.dkim.canonicalization?)\n" +
		"x.toml:7: milter.geo.sorce: unknown key (did you mean milter.geo.source?)\n" +
		"x.toml:9: dns.timout: unknown key (did you mean dns.timeout?)"
	for range 5 { // map order differs from run to run; the report must not
		_, err := Parse("x.toml", []byte(in))
		if err == nil {
			t.Fatal("no error")
		}
		if diff := cmp.Diff(want, err.Error()); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
	}
}

func TestProviderOverride(t *testing.T) {
	c, err := Parse("x.toml", []byte(`
[providers.google]
route = "when-listed"

[providers.microsoft]
enabled = false

[providers.yahoo]
mx_suffixes = ["yahoodns.net"]
route = "when-listed"
zones = ["zen.spamhaus.org"]
`))
	if err != nil {
		t.Fatal(err)
	}
	g := c.Providers["google"]
	if g.Route != "when-listed" || !g.Enabled || len(g.MXSuffixes) != 2 || g.ASNs[0] != 15169 {
		t.Errorf("google override lost its defaults: %+v", g)
	}
	if c.Providers["microsoft"].Enabled {
		t.Error("microsoft not disabled")
	}
	if y := c.Providers["yahoo"]; !y.Enabled || y.MXSuffixes[0] != "yahoodns.net" {
		t.Errorf("yahoo: %+v", y)
	}
}

func TestNormalisation(t *testing.T) {
	c, err := Parse("x.toml", []byte(`
[dns]
servers = ["127.0.0.53", "[::1]:5353"]
[domains]
local = ["Example.ORG.", "Bücher.example"]
[[rules]]
domain = "Müller.Example"
route = "relay"
[[milter.dkim.keys]]
domain = "Bücher.example."
selector = "s1"
key_file = "/k"
[milter.geo]
block_countries = ["ru", "Cn"]
source = "dns"
`))
	if err != nil {
		t.Fatal(err)
	}
	got := []any{c.DNS.Servers, c.Domains.Local, c.Rules[0].Domain, c.Milter.DKIM.Keys[0].Domain, c.Milter.Geo.BlockCountries}
	want := []any{[]string{"127.0.0.53:53", "[::1]:5353"}, []string{"example.org", "xn--bcher-kva.example"},
		"xn--mller-kva.example", "xn--bcher-kva.example", []string{"RU", "CN"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func FuzzParse(f *testing.F) {
	data, _ := os.ReadFile("../../contrib/mxdetour.toml")
	f.Add(data)
	f.Add([]byte("[[rules]]\ndomain=\"x\"\nroute=\"relay\"\n[providers.a]\nasns=[1]"))
	f.Add([]byte("[dns]\ntimeout=1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("fuzz.toml", b)
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
		if err != nil {
			var es Errors
			if !errorsAs(err, &es) || len(es) == 0 {
				t.Fatalf("error is not Errors: %v", err)
			}
		}
	})
}

func errorsAs(err error, es *Errors) bool {
	e, ok := err.(Errors)
	*es = e
	return ok
}

func TestLimits(t *testing.T) {
	c, err := Parse("x.toml", []byte(`
[[limits]]
key = "sasl_username"
max = 500
window = "1h"

[[limits]]
key = "sender_domain"
max = 50
window = "10m"
destination_provider = "google"
action = "defer"

[[limits]]
key = "local_user"
max = 20
window = "1h"
exempt = ["local_user:newsletter"]
raise = { "local_user:www-data" = 200 }
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Limit{
		{Key: "sasl_username", Max: 500, Window: d("1h"), Action: "HOLD"},
		{Key: "sender_domain", Max: 50, Window: d("10m"), DestinationProvider: "google", Action: "DEFER"},
		{Key: "local_user", Max: 20, Window: d("1h"), Action: "HOLD", Exempt: []string{"local_user:newsletter"},
			Raise: map[string]int{"local_user:www-data": 200}},
	}
	if diff := cmp.Diff(want, c.Limits); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestMilterPolicyd: the milter asks policyd where milter.policyd_listen
// says (an abstract socket too), else at policyd.policy_listen.
func TestMilterPolicyd(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "127.0.0.1:10040"},
		{"[policyd]\npolicy_listen = \"unix:/var/spool/postfix/private/mxdetour-policy\"\n", "unix:/var/spool/postfix/private/mxdetour-policy"},
		{"[milter]\npolicyd_listen = \"unix:@mxdetour-policy\"\n", "unix:@mxdetour-policy"},
		{"[milter]\npolicyd_listen = \"127.0.0.1:20040\"\n[policyd]\npolicy_listen = \"\"\n", "127.0.0.1:20040"},
		{"[policyd]\npolicy_listen = \"\"\n", ""},
	} {
		c, err := Parse("x.toml", []byte(tc.in))
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if got := c.MilterPolicyd(); got != tc.want {
			t.Errorf("%q: MilterPolicyd() = %q, want %q", tc.in, got, tc.want)
		}
	}
}
