package filter

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/d--j/go-milter"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/geo"
	"github.com/mxdetour/mxdetour/internal/setup"
)

// TestCountryRules runs [[milter.geo.rules]] through the milter protocol:
// the database maps 203.0.113.0/24 to RU (countryDB), and the AS lookup
// puts 203.0.113.66 in AS 64496.
func TestCountryRules(t *testing.T) {
	asnOf := func(_ context.Context, ip netip.Addr) ([]uint32, error) {
		if ip == netip.MustParseAddr("203.0.113.66") {
			return []uint32{64496}, nil
		}
		return nil, nil
	}
	const custom = "550 5.7.1 Mail from your network is not accepted here; write to postmaster@example.net"
	for _, tc := range []struct {
		name  string
		geo   func(*config.Geo)
		want  map[string]string // client: reply ("" = accepted)
		lines []string          // INFO lines: message, rule, matched
	}{
		{"block_countries as before", func(g *config.Geo) {},
			map[string]string{"203.0.113.9": "550 5.7.1 Client host rejected: mail from your country (RU) is not accepted here", "192.0.2.1": ""},
			[]string{"rejected by a country rule milter.geo.block_countries country RU"}},
		{"log-only refuses nothing", func(g *config.Geo) {
			g.BlockCountries = nil
			g.Rules = []config.GeoRule{{Countries: []string{"RU"}, Action: "log"}}
		}, map[string]string{"203.0.113.9": "", "192.0.2.1": ""},
			[]string{"would refuse (log-only rule): accepted milter.geo.rules[0] country RU"}},
		{"allow-only", func(g *config.Geo) {
			g.BlockCountries = nil
			g.Rules = []config.GeoRule{{Networks: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, Allow: true},
				{Countries: []string{"*"}, Action: "refuse", Reply: custom}}
		}, map[string]string{"203.0.113.9": custom, "192.0.2.1": ""},
			[]string{"rejected by a country rule milter.geo.rules[1] country RU"}},
		{"AS rule before an allowed country, section reply", func(g *config.Geo) {
			g.BlockCountries = nil
			g.Reply = custom
			g.Rules = []config.GeoRule{{ASNs: []uint32{64496}, Action: "refuse"},
				{Countries: []string{"RU"}, Allow: true}, {Countries: []string{"*"}, Action: "refuse"}}
		}, map[string]string{"203.0.113.66": custom, "203.0.113.9": ""},
			[]string{"rejected by a country rule milter.geo.rules[0] AS 64496"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var g config.Geo
			st := state(t, func(fx *fixture) { tc.geo(&fx.geo); g = fx.geo })
			p := setup.GeoPolicy(g, nil)
			p.ASN = asnOf
			old := st.Geo
			st.Geo = old.Reuse(p)
			old.Close()
			t.Cleanup(st.Geo.Close)
			core, logs := observer.New(zap.InfoLevel)
			addr := serve(t, New(st, zap.New(core)))
			got := map[string]string{}
			for client := range tc.want {
				o := run(t, addr, transaction{client: client, smtpd: true, rcpts: []string{"b@partner.mxd"}, header: hdr, body: "x\r\n"})[0]
				switch o.mail.Type {
				case milter.ActionRejectWithCode:
					got[client] = o.mail.SMTPReply
				case milter.ActionContinue:
					got[client] = ""
				default:
					got[client] = fmt.Sprint(o.mail.Type)
				}
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("replies (-want +got)\n%s", d)
			}
			var lines []string
			for _, e := range logs.All() {
				f := e.ContextMap()
				if f["rule"] != nil {
					lines = append(lines, e.Message+" "+f["rule"].(string)+" "+f["matched"].(string))
				}
			}
			if d := cmp.Diff(tc.lines, lines); d != "" {
				t.Errorf("log lines (-want +got)\n%s", d)
			}
		})
	}
}

func TestGeoReply(t *testing.T) {
	for _, tc := range []struct {
		v    geo.Verdict
		code uint16
		text string
	}{
		{geo.Verdict{Matched: "country RU", Country: "RU"}, 550, "5.7.1 Client host rejected: mail from your country (RU) is not accepted here"},
		{geo.Verdict{Matched: "AS 64496"}, 550, "5.7.1 Client host rejected: mail from your network is not accepted here"},
		{geo.Verdict{Reply: "554 5.7.1 go away; write to postmaster@example.net"}, 554, "5.7.1 go away; write to postmaster@example.net"},
	} {
		code, text := geoReply(tc.v)
		if code != tc.code || text != tc.text {
			t.Errorf("%+v: %d %q, want %d %q", tc.v, code, text, tc.code, tc.text)
		}
	}
}
