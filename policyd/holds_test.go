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
