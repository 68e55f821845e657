package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestLibrariesStayClean: the signer and the filter take options of their
// own, never the configuration file's types, and run no programs: the
// set-up (milter/server) maps the file onto their options, and what needs
// os/exec (keygen's postconf) lives outside them. A dependency that
// brings either in fails here.
func TestLibrariesStayClean(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the dependencies")
	}
	forbidden := []string{"github.com/mxdetour/mxdetour/internal/config", "os/exec"}
	for _, pkg := range []string{"github.com/mxdetour/mxdetour/milter/dkim", "github.com/mxdetour/mxdetour/milter/filter"} {
		out, err := exec.Command(goCmd, "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		deps := strings.Fields(string(out))
		for _, f := range forbidden {
			if slices.Contains(deps, f) {
				t.Errorf("%s depends on %s", pkg, f)
			}
		}
	}
}
