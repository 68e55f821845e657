package route_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestImports: the decision knows nothing of the configuration file, runs
// no commands and does not follow the delivery log; it takes its Options
// and its lookups from whoever builds it (internal/setup, the daemon).
func TestImports(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the imports with")
	}
	out, err := exec.Command(gobin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	for _, bad := range []string{"github.com/mxdetour/mxdetour/internal/config", "os/exec", "github.com/mxdetour/mxdetour/policyd/learn"} {
		if slices.Contains(deps, bad) {
			t.Errorf("policyd/route depends on %s", bad)
		}
	}
}
