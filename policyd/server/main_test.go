package server_test

import (
	"testing"

	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/policyd/policydtest"
)

func zone() dnstest.Zone { return policydtest.Zone() }

// writeConfig is policydtest.WriteConfig for tests that need only the path.
func writeConfig(t *testing.T, dns string, extra string) string {
	path, _, _ := policydtest.WriteConfig(t, dns, extra)
	return path
}
