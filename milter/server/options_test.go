package server

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/milter/dkim"
	"github.com/mxdetour/mxdetour/milter/filter"
)

// TestOptionsFromConfig: each setting of the file reaches the library
// option that applies it.
func TestOptionsFromConfig(t *testing.T) {
	c := config.Default()
	c.Milter.OnError = "tempfail"
	c.Milter.DKIM.SignTrusted = false
	c.Domains.Reserved = []string{"corp.invalid"}
	c.Milter.DKIM.Canonicalization = "simple/relaxed"
	c.Milter.DKIM.DefaultDomain = "example.org"
	c.Milter.DKIM.KeyDir = "/etc/mxdetour/dkim"
	c.Milter.DKIM.Keys = []config.DKIMKey{{Domain: "example.net", Selector: "s1", KeyFile: "/k", Subdomains: true}}
	c.Milter.DKIM.AllowGroupReadable = true

	eq := cmpopts.EquateComparable(netip.Prefix{})
	wantFilter := filter.Options{TrustedNetworks: c.Milter.TrustedNetworks, RejectReserved: true, Reserved: []string{"corp.invalid"},
		TempfailOnError: true, SignAuthenticated: true, SignTrusted: false, DefaultDomain: "example.org"}
	if d := cmp.Diff(wantFilter, FilterOptions(c), eq); d != "" {
		t.Errorf("filter options (-want +got):\n%s", d)
	}
	wantSign := dkim.Options{HeaderCanon: "simple", BodyCanon: "relaxed", Headers: c.Milter.DKIM.Headers, Oversign: c.Milter.DKIM.OversignHeaders}
	if d := cmp.Diff(wantSign, SignOptions(c.Milter.DKIM)); d != "" {
		t.Errorf("signing options (-want +got):\n%s", d)
	}
	wantTable := dkim.TableOptions{Keys: []dkim.KeyRow{{Domain: "example.net", Selector: "s1", KeyFile: "/k", Subdomains: true}},
		KeyDir: "/etc/mxdetour/dkim", KeyFileTemplate: "{domain}.{selector}.key", DefaultDomain: "example.org", AllowGroupReadable: true}
	if d := cmp.Diff(wantTable, KeyTable(c.Milter.DKIM)); d != "" {
		t.Errorf("key table options (-want +got):\n%s", d)
	}
}
