package wire

import (
	"slices"
	"strings"
)

// Postfix lists (transport_maps, smtpd_milters, restrictions) are split
// on commas and white space, and a { ... } group is one element however
// many commas it holds (postconf(5), "lists"; mystrtokq() in Postfix's
// util/mystrtok.c). These helpers edit such lists element by element and
// keep the administrator's text where they only add to it.

// splitList returns the elements of a Postfix list value.
func splitList(v string) []string {
	var out []string
	start, depth := -1, 0
	for i, c := range v {
		sep := depth == 0 && strings.ContainsRune(", \t\r\n", c)
		switch {
		case sep && start >= 0:
			out = append(out, v[start:i])
			start = -1
		case sep:
		default:
			if start < 0 {
				start = i
			}
			switch c {
			case '{':
				depth++
			case '}':
				if depth > 0 {
					depth--
				}
			}
		}
	}
	if start >= 0 {
		out = append(out, v[start:])
	}
	return out
}

// joinList writes elements as a list, sep between them; a { ... } group
// follows its name after a space, as Postfix's documentation writes
// "check_policy_service { inet:..., timeout=2s }".
func joinList(elems []string, sep string) string {
	var b strings.Builder
	for i, e := range elems {
		if i > 0 {
			if strings.HasPrefix(e, "{") {
				b.WriteString(" ")
			} else {
				b.WriteString(sep)
			}
		}
		b.WriteString(e)
	}
	return b.String()
}

// withEntry returns list value v with entry in it: appended (kept after
// the administrator's entries) unless first is set, then prepended.
// Elements of drop (entries wire added earlier and no longer wants) are
// removed. When nothing needs to change it returns v itself, so that the
// administrator's layout survives; sep joins an added entry ("," in
// master.cf's -o values, which must not hold spaces).
func withEntry(v, entry string, drop []string, first bool, sep string) string {
	elems := splitList(v)
	kept := elems[:0:0]
	for _, e := range elems {
		if !slices.Contains(drop, e) || e == entry {
			kept = append(kept, e)
		}
	}
	present := slices.Contains(kept, entry)
	if present && (!first || firstEnough(kept, entry)) {
		if len(kept) == len(elems) {
			return v
		}
		return joinList(kept, sep)
	}
	if !present && len(kept) == len(elems) && strings.TrimSpace(v) != "" {
		// Only adding: keep the administrator's text as written.
		if first {
			return entry + sep + strings.TrimSpace(v)
		}
		return strings.TrimSpace(v) + sep + entry
	}
	rest := kept[:0:0]
	for _, e := range kept {
		if e != entry {
			rest = append(rest, e)
		}
	}
	if first {
		return joinList(append([]string{entry}, rest...), sep)
	}
	return joinList(append(rest, entry), sep)
}

// firstEnough reports whether entry comes before every permit_* element:
// after a permit Postfix evaluates nothing more of the list.
func firstEnough(elems []string, entry string) bool {
	for _, e := range elems {
		if e == entry {
			return true
		}
		if strings.HasPrefix(e, "permit") {
			return false
		}
	}
	return false
}

// withoutEntries returns v without the elements of drop, and whether any
// was there.
func withoutEntries(v string, drop []string, sep string) (string, bool) {
	elems := splitList(v)
	kept := elems[:0:0]
	for _, e := range elems {
		if !slices.Contains(drop, e) {
			kept = append(kept, e)
		}
	}
	if len(kept) == len(elems) {
		return v, false
	}
	return joinList(kept, sep), true
}

// sameList reports whether two list values have the same elements in the
// same order, however they are spaced.
func sameList(a, b string) bool {
	x, y := splitList(a), splitList(b)
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}
