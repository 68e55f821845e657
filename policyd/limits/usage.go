package limits

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Usage is one subject's live count against one [[limits]] entry, as
// `holds counts` shows it: nothing is counted to read it.
type Usage struct {
	Limit    string `json:"limit"` // Name()
	Key      string `json:"key"`   // the limit's key type
	Provider string `json:"destination_provider,omitempty"`
	Window   string `json:"window"`
	Count    int    `json:"count"`
	Max      int    `json:"max"` // the subject's own when raised
	Action   Action `json:"action"`
	Exempt   bool   `json:"exempt,omitempty"` // the limit does not count the subject
}

// Counter reads a counter without counting; every Store is one.
type Counter interface {
	Count(key string, w time.Duration, now time.Time) int
}

// ParseSubject reads a subject as a person writes it: "local_user:alice"
// or "local_user=alice"; a sender is lower-cased as the limits count it.
func ParseSubject(s string) (string, error) {
	if k, v, ok := strings.Cut(s, "="); ok && !strings.Contains(k, ":") {
		s = k + ":" + v
	}
	if !IsSubject(s) {
		return "", fmt.Errorf("%q is no key: write KEY:VALUE or KEY=VALUE with KEY one of %s", s, keyList())
	}
	if k, v, _ := strings.Cut(s, ":"); k == string(KeySender) || k == string(KeySenderDomain) {
		s = k + ":" + strings.ToLower(v)
	}
	return s, nil
}

func keyList() string {
	names := make([]string, len(keyTypes))
	for i, k := range keyTypes {
		names[i] = string(k)
	}
	return strings.Join(names, ", ")
}

// counts tells whether a limit keyed by k counts a subject of type t: its
// own key type, and a sasl_username limit also counts mail without a
// login by its local account or (trusted clients) its sender, as
// subjectSet.compute keys it.
func counts(k, t KeyType) bool {
	return k == t || (k == KeySASL && (t == KeyLocalUser || t == KeySender))
}

// Usages returns subject's count against each configured limit that
// counts it, read from c at now.
func Usages(o *Options, c Counter, subject string, now time.Time) []Usage {
	t, _, _ := strings.Cut(subject, ":")
	var out []Usage
	for i := range o.Limits {
		lim := &o.Limits[i]
		if !counts(lim.Key, KeyType(t)) {
			continue
		}
		u := Usage{Limit: lim.Name(), Key: string(lim.Key), Provider: lim.Provider, Window: FormatWindow(lim.Window),
			Max: lim.Max, Action: lim.Action}
		if slices.Contains(lim.Exempt, subject) { // Options as configured, or as Configure keeps them
			u.Exempt = true
		} else {
			if m, ok := lim.Raise[subject]; ok {
				u.Max = m
			}
			u.Count = c.Count(lim.ID()+"|"+subject, lim.Window, now)
		}
		out = append(out, u)
	}
	return out
}
