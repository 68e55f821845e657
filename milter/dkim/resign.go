package dkim

import (
	"strings"
)

// SignedBy returns the d= and s= tags of a DKIM-Signature header field
// value (RFC 6376 section 3.5), d= in lower case; ok is false when either
// is missing.
func SignedBy(value string) (d, s string, ok bool) {
	for _, tag := range strings.Split(value, ";") {
		name, v, found := strings.Cut(tag, "=")
		if !found {
			continue
		}
		v = strings.Join(strings.Fields(v), "") // folding whitespace
		switch strings.TrimSpace(name) {
		case "d":
			d = strings.ToLower(strings.TrimSuffix(v, "."))
		case "s":
			s = v
		}
	}
	return d, s, d != "" && s != ""
}

// NotYetSigned splits keys, which sign as signingDomain, into those that
// have no DKIM-Signature among existing (header field values) with their
// d= and s=, and those that do: a message re-injected after a content
// filter, a forward or a list expansion on this host already carries our
// signature, and a second one with the same d= and s= only costs
// receivers' verification limits (OpenDKIM checks 3) or gets the message
// refused (duplicate signatures). Selectors name DNS labels, so they
// compare without regard to case.
func NotYetSigned(keys []*Key, existing []string, signingDomain string) (todo, done []*Key) {
	if len(existing) == 0 {
		return keys, nil
	}
	have := map[string]bool{}
	for _, v := range existing {
		if d, s, ok := SignedBy(v); ok && d == strings.ToLower(signingDomain) {
			have[strings.ToLower(s)] = true
		}
	}
	for _, k := range keys {
		if have[strings.ToLower(k.Selector)] {
			done = append(done, k)
		} else {
			todo = append(todo, k)
		}
	}
	return todo, done
}
