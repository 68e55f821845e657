package main

import (
	"strings"
	"testing"
)

// -h of every command prints its flags and exits 0, as the milter's do;
// 78 is for a usage that is wrong.
func TestHelpExitsZero(t *testing.T) {
	for _, cmd := range []string{"check", "blocks", "holds", "wire", "unwire"} {
		var out strings.Builder
		if code := run([]string{cmd, "-h"}, &out, &out); code != 0 || !strings.Contains(out.String(), "-config") {
			t.Errorf("%s -h: exit %d, want 0 and the flags; printed:\n%s", cmd, code, out.String())
		}
	}
}
