// Package domain extracts and normalises the domain of a mail address
// (RFC 5321 section 4.1.2, RFC 5890 IDNA) and knows the reserved names of
// RFC 2606 and RFC 6761 that never receive mail.
package domain

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// ErrNoDomain is returned for an address without a domain part, such as a
// bare local part or the null sender "<>".
var ErrNoDomain = errors.New("address has no domain")

// profile converts to A-labels the way a mail client looking up MX records
// must (RFC 5891 section 5). It is permissive about underscores and the like,
// which real DNS names carry, and strict about what IDNA forbids.
var profile = idna.New(
	idna.MapForLookup(),
	idna.Transitional(false),
	idna.StrictDomainName(false),
	idna.VerifyDNSLength(false),
)

// FromAddress returns the normalised domain of a mail address: the part
// after the last '@' that is not inside a quoted local part, with angle
// brackets and an RFC 5321 source route ("@a,@b:user@dom") ignored.
func FromAddress(addr string) (string, error) {
	addr = strings.TrimSpace(addr)
	if len(addr) >= 2 && addr[0] == '<' && addr[len(addr)-1] == '>' {
		addr = addr[1 : len(addr)-1]
	}
	if strings.HasPrefix(addr, "@") {
		// A source route ends at the first ':' (RFC 5321 section 4.1.2).
		if i := strings.IndexByte(addr, ':'); i >= 0 {
			addr = addr[i+1:]
		}
	}
	at := lastAt(addr)
	if at < 0 {
		return "", ErrNoDomain
	}
	return Normalize(addr[at+1:])
}

// lastAt finds the '@' that separates local part and domain, skipping any
// '@' inside a quoted local part ("a@b"@example.org).
func lastAt(addr string) int {
	at, quoted := -1, false
	for i := 0; i < len(addr); i++ {
		switch c := addr[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		case c == '@' && !quoted:
			at = i
		}
	}
	return at
}

// Normalize returns d in the form mxdetour compares and looks up: lower
// case, IDNA A-labels, no trailing dot. An address literal comes back in
// its canonical form ("[192.0.2.1]", "[ipv6:2001:db8::1]"; see Literal).
func Normalize(d string) (string, error) {
	d = strings.TrimSuffix(strings.TrimSpace(d), ".")
	if d == "" {
		return "", ErrNoDomain
	}
	if d[0] == '[' {
		a, err := parseLiteral(d)
		if err != nil {
			return "", err
		}
		return formatLiteral(a), nil
	}
	if isLowerASCII(d) {
		return d, nil
	}
	if !utf8.ValidString(d) {
		return "", fmt.Errorf("domain %q: not valid UTF-8", d)
	}
	a, err := profile.ToASCII(d)
	if err == nil && strings.Contains(a, "xn--") {
		// The A-label form must itself be valid (RFC 5891 section 5.4).
		_, err = profile.ToUnicode(a)
	}
	if err != nil {
		return "", fmt.Errorf("domain %q: %w", d, err)
	}
	a = strings.ToLower(a)
	if a == "" || !isLowerASCII(strings.ReplaceAll(a, "xn--", "xn-")) {
		return "", fmt.Errorf("domain %q: not a valid host name", d)
	}
	return a, nil
}

// IsLiteral reports whether the normalised domain d is an address literal
// (RFC 5321 section 4.1.3), such as "[192.0.2.1]": mail for it goes to that
// address, with no DNS lookup.
func IsLiteral(d string) bool { return d != "" && d[0] == '[' }

// Literal returns the address of an address literal, in any form Normalize
// accepts; false when d is not one.
func Literal(d string) (netip.Addr, bool) {
	d = strings.TrimSuffix(strings.TrimSpace(d), ".")
	if !IsLiteral(d) {
		return netip.Addr{}, false
	}
	a, err := parseLiteral(d)
	return a, err == nil
}

// ipv6Tag starts an IPv6 address literal (RFC 5321 section 4.1.3); the
// tag is matched without regard to case, as Postfix does.
const ipv6Tag = "ipv6:"

// parseLiteral reads "[IPv4]" or "[IPv6:IPv6]" (RFC 5321 section 4.1.3).
// General address literals ("[tag:content]") name no transport Postfix
// has, so they are refused like any other invalid domain.
func parseLiteral(d string) (netip.Addr, error) {
	inner, ok := strings.CutSuffix(d[1:], "]") // d[0] is '['
	if !ok {
		return netip.Addr{}, fmt.Errorf("address literal %q: no closing ']'", d)
	}
	want6 := len(inner) >= len(ipv6Tag) && strings.EqualFold(inner[:len(ipv6Tag)], ipv6Tag)
	if want6 {
		inner = inner[len(ipv6Tag):]
	}
	a, err := netip.ParseAddr(inner)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("address literal %q: %w", d, err)
	case a.Zone() != "":
		return netip.Addr{}, fmt.Errorf("address literal %q: an IPv6 zone has no meaning in mail", d)
	case want6 != a.Is6():
		return netip.Addr{}, fmt.Errorf("address literal %q: write IPv4 addresses as [192.0.2.1], IPv6 ones as [IPv6:2001:db8::1]", d)
	}
	return a, nil
}

func formatLiteral(a netip.Addr) string {
	if a.Is6() {
		return "[" + ipv6Tag + a.String() + "]"
	}
	return "[" + a.String() + "]"
}

// isLowerASCII reports whether d is already in the normal form for the
// common case, so that Normalize does no work and no allocation for it.
func isLowerASCII(d string) bool {
	if d[0] == '.' || d[len(d)-1] == '.' {
		return false
	}
	prev := byte(0)
	for i := 0; i < len(d); i++ {
		c := d[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		case c == '.' && prev != '.':
		default:
			return false
		}
		prev = c
	}
	// "xn--" labels must still be checked by the IDNA profile.
	return !strings.Contains(d, "xn--")
}

// reserved are the special-use names of RFC 2606 and RFC 6761 that never
// receive mail: the names themselves and all their subdomains.
var reserved = []string{"example", "example.com", "example.net", "example.org", "test", "invalid", "localhost"}

// Reserved reports whether the normalised domain d is one of the RFC 2606 /
// RFC 6761 reserved names, one of extra, or a subdomain of either.
func Reserved(d string, extra []string) bool {
	return Within(d, reserved) || Within(d, extra)
}

// Within reports whether d equals one of names or is a subdomain of one,
// matching on label boundaries ("fakegoogle.com" is not within
// "google.com"). Both sides must be normalised.
func Within(d string, names []string) bool {
	for _, n := range names {
		if IsSubdomain(d, n) {
			return true
		}
	}
	return false
}

// IsSubdomain reports whether d is parent or a subdomain of it.
func IsSubdomain(d, parent string) bool {
	if parent == "" {
		return false
	}
	if len(d) == len(parent) {
		return d == parent
	}
	return len(d) > len(parent) && d[len(d)-len(parent)-1] == '.' && d[len(d)-len(parent):] == parent
}
