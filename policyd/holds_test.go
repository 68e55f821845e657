package main

import (
	"strings"
	"testing"
)

func TestHoldsUsage(t *testing.T) {
	for _, args := range [][]string{{"holds", "bogus"}, {"holds", "release"}, {"holds", "-nope"}} {
		var out, errs strings.Builder
		if code := run(args, &out, &errs); code != exitConfig {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitConfig, errs.String())
		}
	}
}

func TestResolveKey(t *testing.T) {
	groups := []heldGroup{{Key: "sasl_username:alice"}, {Key: "sender:www@ours.test"}, {Key: "sender_domain:alice"}}
	for in, want := range map[string]string{
		"sasl_username:alice": "sasl_username:alice",
		"sasl_username:zoe":   "sasl_username:zoe", // nothing held: its windows can still be reset
		"www@ours.test":       "sender:www@ours.test",
		"alice":               "", // two keys have it
		"nobody":              "",
	} {
		got, err := resolveKey(in, groups)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("resolveKey(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
