package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/milter/dkim"
)

// datedDB writes a country database built at built.
func datedDB(t *testing.T, built time.Time) string {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoLite2-Country", RecordSize: 24,
		IncludeReservedNetworks: true, BuildEpoch: built.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	_, n, _ := net.ParseCIDR("203.0.113.0/24")
	tree.Insert(n, mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.String("RU")}})
	p := filepath.Join(t.TempDir(), "country.mmdb")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestGeoDataAge: a database older than max_age is a doctor warning and a
// stale metric; a fresh one is OK; one that does not load is critical.
func TestGeoDataAge(t *testing.T) {
	now := time.Now()
	old, fresh := datedDB(t, now.Add(-40*24*time.Hour)), datedDB(t, now.Add(-2*24*time.Hour))
	for _, tc := range []struct {
		name, file string
		status     dkim.Status
		msg        string
		stale      float64
	}{
		{"stale", old, dkim.Warning, "40d old, older than milter.geo.max_age (30d)", 1},
		{"fresh", fresh, dkim.OK, "2d old", 0},
		{"missing", filepath.Join(t.TempDir(), "none.mmdb"), dkim.Critical, "does not load", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Milter.Geo.Source, cfg.Milter.Geo.MMDBFile, cfg.Milter.Geo.BlockCountries = "mmdb", tc.file, []string{"RU"}
			fs := geoFindings(cfg.Milter.Geo, now)
			if len(fs) != 1 || fs[0].Status != tc.status || !strings.Contains(fs[0].Message, tc.msg) {
				t.Errorf("doctor: %+v, want %v containing %q", fs, tc.status, tc.msg)
			}

			b := newState(cfg, zaptest.NewLogger(t), nil)
			defer b.st.Geo.Close()
			reg := prometheus.NewRegistry()
			reg.MustRegister(stateCollector(func() *built { return b }))
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]float64{}
			for _, mf := range mfs {
				got[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
			}
			stale, ok := got["mxdetour_milter_geo_data_stale"]
			if !ok {
				stale = -1 // absent: age unknown
			}
			if stale != tc.stale {
				t.Errorf("mxdetour_milter_geo_data_stale %v, want %v (metrics %v)", stale, tc.stale, got)
			}
			if age := got["mxdetour_milter_geo_data_age_seconds"]; tc.stale >= 0 && (age < 24*3600 || age > 41*24*3600) {
				t.Errorf("age %v s", age)
			}
			if got["mxdetour_milter_geo_data_max_age_seconds"] != 30*24*3600 {
				t.Errorf("max age %v", got["mxdetour_milter_geo_data_max_age_seconds"])
			}

			core, logs := observer.New(zap.WarnLevel)
			(&milterd{log: zap.New(core)}).report(b) // at start and at each reload
			warned := logs.FilterMessageSnippet("older than milter.geo.max_age").Len() == 1
			if warned != (tc.stale == 1) {
				t.Errorf("log warning %v, want %v: %v", warned, tc.stale == 1, logs.All())
			}
		})
	}
}
