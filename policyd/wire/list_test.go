package wire

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSplitList(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  ", nil},
		{"hash:/etc/postfix/transport, socketmap:inet:127.0.0.1:10041:transport",
			[]string{"hash:/etc/postfix/transport", "socketmap:inet:127.0.0.1:10041:transport"}},
		{"a,b\n    c\td", []string{"a", "b", "c", "d"}},
		{"$mxdetour_limits, check_policy_service { inet:127.0.0.1:10040, timeout=2s }, permit_mynetworks",
			[]string{"$mxdetour_limits", "check_policy_service", "{ inet:127.0.0.1:10040, timeout=2s }", "permit_mynetworks"}},
		{"inline:{ a=b, c=d },x", []string{"inline:{ a=b, c=d }", "x"}},
	} {
		if d := cmp.Diff(c.want, splitList(c.in)); d != "" {
			t.Errorf("splitList(%q) (-want +got):\n%s", c.in, d)
		}
	}
}

func TestWithEntry(t *testing.T) {
	const sm = "socketmap:inet:127.0.0.1:10041:transport"
	for _, c := range []struct {
		name  string
		v     string
		entry string
		drop  []string
		first bool
		want  string
	}{
		{"empty", "", sm, nil, false, sm},
		{"after theirs, their text kept", "hash:/etc/postfix/transport,   hash:/x", sm, nil, false, "hash:/etc/postfix/transport,   hash:/x, " + sm},
		{"already there", "hash:/x, " + sm, sm, nil, false, "hash:/x, " + sm},
		{"an old address replaced", "hash:/x, socketmap:inet:127.0.0.1:9:transport", sm, []string{"socketmap:inet:127.0.0.1:9:transport"}, false, "hash:/x, " + sm},
		{"first", "permit_mynetworks, reject_unauth_destination", "$mxdetour_limits", nil, true, "$mxdetour_limits, permit_mynetworks, reject_unauth_destination"},
		{"first enough: before every permit", "check_client_access hash:/x, $mxdetour_limits, permit_mynetworks", "$mxdetour_limits", nil, true, "check_client_access hash:/x, $mxdetour_limits, permit_mynetworks"},
		{"after a permit: moved first", "permit_mynetworks, $mxdetour_limits", "$mxdetour_limits", nil, true, "$mxdetour_limits, permit_mynetworks"},
		{"braces kept with their name", "check_policy_service { inet:x, timeout=2s }, permit, $mxdetour_limits", "$mxdetour_limits", nil, true,
			"$mxdetour_limits, check_policy_service { inet:x, timeout=2s }, permit"},
	} {
		if got := withEntry(c.v, c.entry, c.drop, c.first, ", "); got != c.want {
			t.Errorf("%s: withEntry(%q) = %q, want %q", c.name, c.v, got, c.want)
		}
	}
	if got := withEntry("permit_sasl_authenticated,reject", "$mxdetour_limits", nil, true, ","); got != "$mxdetour_limits,permit_sasl_authenticated,reject" {
		t.Errorf("master.cf -o value: %q", got)
	}
}

func TestWithoutEntries(t *testing.T) {
	got, had := withoutEntries("inet:127.0.0.1:9999, inet:127.0.0.1:10042, inet:127.0.0.1:7777", []string{"inet:127.0.0.1:10042"}, ", ")
	if !had || got != "inet:127.0.0.1:9999, inet:127.0.0.1:7777" {
		t.Errorf("withoutEntries = %q, %v", got, had)
	}
	if got, had := withoutEntries("a,  b", []string{"c"}, ", "); had || got != "a,  b" {
		t.Errorf("nothing to drop: %q, %v", got, had)
	}
	if !sameList("a, b\n  c", "a,b,c") || sameList("a,b", "b,a") {
		t.Error("sameList")
	}
}

func TestAddress(t *testing.T) {
	pl := &planner{st: &state{queueDir: "/var/spool/postfix", services: []*service{
		{name: "rewrite", typ: "unix", fields: map[string]string{"chroot": "y", "command": "trivial-rewrite"}},
	}}}
	for _, c := range []struct{ listen, want, err string }{
		{"127.0.0.1:10041", "inet:127.0.0.1:10041", ""},
		{"0.0.0.0:10041", "inet:127.0.0.1:10041", ""},
		{"[::]:10041", "inet:[::1]:10041", ""},
		{"[::1]:10041", "inet:[::1]:10041", ""},
		{"unix:/var/spool/postfix/private/mxdetour-socketmap", "unix:private/mxdetour-socketmap", ""},
		{"unix:/run/mxdetour/socketmap.sock", "", "outside Postfix's queue directory"},
		{"unix:/var/spool/postfix/../x.sock", "", "outside"},
		{"nonsense", "", "neither host:port nor unix:/path"},
	} {
		got, err := pl.address("policyd.socketmap_listen", c.listen, "trivial-rewrite")
		if got != c.want || (err == nil) != (c.err == "") || err != nil && !strings.Contains(err.Error(), c.err) {
			t.Errorf("address(%q) = %q, %v; want %q, %q", c.listen, got, err, c.want, c.err)
		}
	}
	// Not chrooted: a socket anywhere will do.
	pl.st.services[0].fields["chroot"] = "n"
	if got, err := pl.address("k", "unix:/run/mxdetour/socketmap.sock", "trivial-rewrite"); err != nil || got != "unix:/run/mxdetour/socketmap.sock" {
		t.Errorf("unchrooted: %q, %v", got, err)
	}
}
