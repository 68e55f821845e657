package domain

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFromAddress(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{"alice@gmail.com", "gmail.com", false},
		{"Alice@GMail.COM", "gmail.com", false},
		{"<bob@Example.ORG.>", "example.org", false},
		{"user+ext@sub.domain.test", "sub.domain.test", false},
		{`"a@b"@quoted.test`, "quoted.test", false},
		{`"a\"@b"@quoted2.test`, "quoted2.test", false},
		{"@relay1.test,@relay2.test:carol@final.test", "final.test", false},
		{"dave@bücher.de", "xn--bcher-kva.de", false},
		{"erin@BÜCHER.de", "xn--bcher-kva.de", false},
		{"frank@xn--bcher-kva.de", "xn--bcher-kva.de", false},
		{"grace@[192.0.2.1]", "[192.0.2.1]", false},
		{"grace@[IPv6:2001:DB8:0::1]", "[ipv6:2001:db8::1]", false},
		{"grace@[ipv6:::ffff:192.0.2.1]", "[ipv6:::ffff:192.0.2.1]", false},
		{"<grace@[192.0.2.1].>", "[192.0.2.1]", false},
		{"grace@[ ", "", true},
		{"grace@[192.0.2.1", "", true},
		{"grace@[192.0.2.256]", "", true},
		{"grace@[2001:db8::1]", "", true},
		{"grace@[IPv6:192.0.2.1]", "", true},
		{"grace@[IPv6:fe80::1%eth0]", "", true},
		{"grace@[x400:c=us;a=b]", "", true},
		{"grace@[ 192.0.2.1]", "", true},
		{"heidi@mx_under.test", "mx_under.test", false},
		{"no-domain", "", true},
		{"<>", "", true},
		{"trailing@", "", true},
		{"dots@a..b", "", true},
		{"dots@.a.b", "", true},
	} {
		got, err := FromAddress(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("FromAddress(%q) error = %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if got != tc.want {
			t.Errorf("FromAddress(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if _, err := FromAddress("x"); !errors.Is(err, ErrNoDomain) {
		t.Errorf("FromAddress(x) = %v, want ErrNoDomain", err)
	}
}

func TestLiteral(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" when not a literal
	}{
		{"[192.0.2.1]", "192.0.2.1"},
		{"[IPv6:2001:db8::1]", "2001:db8::1"},
		{"[ipv6:2001:db8::1].", "2001:db8::1"},
		{"[2001:db8::1]", ""},
		{"[ ", ""},
		{"192.0.2.1", ""},
		{"example.org", ""},
		{"", ""},
	} {
		a, ok := Literal(tc.in)
		got := ""
		if ok {
			got = a.String()
		}
		if got != tc.want {
			t.Errorf("Literal(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for d, want := range map[string]bool{"[192.0.2.1]": true, "[ipv6:2001:db8::1]": true, "example.org": false, "": false} {
		if got := IsLiteral(d); got != want {
			t.Errorf("IsLiteral(%q) = %v, want %v", d, got, want)
		}
	}
}

func TestReserved(t *testing.T) {
	extra := []string{"corp.internal"}
	got := map[string]bool{}
	for _, d := range []string{"example.com", "mail.example.com", "example", "foo.example", "test", "x.test",
		"invalid", "localhost", "a.localhost", "example.net", "example.org", "corp.internal", "a.corp.internal",
		"notexample.com", "example.com.evil.test2", "gmail.com", "internal", "testing"} {
		got[d] = Reserved(d, extra)
	}
	want := map[string]bool{"example.com": true, "mail.example.com": true, "example": true, "foo.example": true,
		"test": true, "x.test": true, "invalid": true, "localhost": true, "a.localhost": true, "example.net": true,
		"example.org": true, "corp.internal": true, "a.corp.internal": true, "notexample.com": false,
		"example.com.evil.test2": false, "gmail.com": false, "internal": false, "testing": false}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Reserved (-want +got):\n%s", diff)
	}
}

func TestIsSubdomain(t *testing.T) {
	for _, tc := range []struct {
		d, parent string
		want      bool
	}{
		{"google.com", "google.com", true},
		{"aspmx.l.google.com", "google.com", true},
		{"fakegoogle.com", "google.com", false},
		{"google.com.evil.example", "google.com", false},
		{"com", "google.com", false},
		{"x", "", false},
	} {
		if got := IsSubdomain(tc.d, tc.parent); got != tc.want {
			t.Errorf("IsSubdomain(%q, %q) = %v, want %v", tc.d, tc.parent, got, tc.want)
		}
	}
}

func BenchmarkFromAddress(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := FromAddress("someone@customer-domain.example"); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzFromAddress(f *testing.F) {
	for _, s := range []string{"a@b.c", `"x@y"@z`, "@r:u@d", "u@bücher.de", "<>", "u@[1.2.3.4]", "u@xn--zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := FromAddress(s)
		if err != nil {
			return
		}
		// A normalised domain is a fixed point.
		again, err := Normalize(d)
		if err != nil || again != d {
			t.Fatalf("Normalize(%q) = %q, %v; want a fixed point", d, again, err)
		}
	})
}

// FuzzNormalize checks that whatever Normalize accepts comes back in a form
// it returns unchanged, and that is a lower-case host name or a literal.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"Example.ORG.", "bücher.de", "[192.0.2.1]", "[IPv6:2001:DB8::1]", "[ ", "a..b", "xn--zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := Normalize(s)
		if err != nil {
			return
		}
		again, err := Normalize(d)
		if err != nil || again != d {
			t.Fatalf("Normalize(%q) = %q; Normalize(%q) = %q, %v; want a fixed point", s, d, d, again, err)
		}
		if _, ok := Literal(d); !ok && !isLowerASCII(strings.ReplaceAll(d, "xn--", "xn-")) {
			t.Fatalf("Normalize(%q) = %q: neither a lower-case host name nor an address literal", s, d)
		}
	})
}
