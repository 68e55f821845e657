package setup

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/geo"
)

// TestGeoPolicy: the rules in the order written, the section's reply for
// block rules without one, block_countries as a last block rule.
func TestGeoPolicy(t *testing.T) {
	allow := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	c := config.Geo{BlockCountries: []string{"RU"}, Allow: allow, Reply: "550 5.7.1 section",
		Rules: []config.GeoRule{
			{ASNs: []uint32{64496}, Action: "refuse", Reply: "554 5.7.1 own"},
			{Countries: []string{"JP"}, Allow: true},
			{Countries: []string{"*"}, Action: "log"},
		}}
	got := GeoPolicy(c, nil)
	want := geo.Policy{Exempt: allow, Rules: []geo.Rule{
		{Name: "milter.geo.rules[0]", ASNs: []uint32{64496}, Reply: "554 5.7.1 own"},
		{Name: "milter.geo.rules[1]", Countries: []string{"JP"}, Allow: true},
		{Name: "milter.geo.rules[2]", Countries: []string{"*"}, LogOnly: true, Reply: "550 5.7.1 section"},
		{Name: "milter.geo.block_countries", Countries: []string{"RU"}, Reply: "550 5.7.1 section"},
	}}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
		t.Errorf("(-want +got)\n%s", d)
	}
	if got.ASN != nil {
		t.Error("an AS lookup without a resolver")
	}
}
