package server

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/geo/geotest"
)

// datedDB writes a country database built at built.
func datedDB(t *testing.T, built time.Time) string {
	p := filepath.Join(t.TempDir(), "country.mmdb")
	geotest.WriteDB(t, p, built, map[string]string{"203.0.113.0/24": "RU"})
	return p
}

// TestCountrySourceDegraded: a country database that does not open
// leaves the milter running without the country block at start, and
// keeps the database in use at a reload.
func TestCountrySourceDegraded(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Milter.Geo = config.Geo{Source: "mmdb", MMDBFile: filepath.Join(dir, "missing.mmdb"), BlockCountries: []string{"RU"}}
	log := zaptest.NewLogger(t)
	b := Build(cfg, log, nil)
	if b.geo != geoFailed || b.st.Geo.Active() || len(b.Problems()) != 1 || !strings.Contains(b.Problems()[0].Error(), "missing.mmdb") {
		t.Errorf("at start: %s, active %v, problems %v; want failed, inactive, naming the file", b.geo, b.st.Geo.Active(), b.Problems())
	}
	if _, err := Check(cfg, log); err == nil || !strings.Contains(err.Error(), "1 problem(s)") || !strings.Contains(err.Error(), "missing.mmdb") {
		t.Errorf("the check's build: %v, want the missing database named", err)
	}
	good := *cfg
	good.Milter.Geo.MMDBFile = datedDB(t, time.Now())
	running := Build(&good, log, nil)
	if running.geo != geoLoaded || len(running.Problems()) != 0 {
		t.Fatalf("a good database: %s %v", running.geo, running.Problems())
	}
	next := Build(cfg, log, running)
	running.st.Geo.Close() // as reload does after the swap
	defer next.st.Geo.Close()
	v, err := next.st.Geo.Check(context.Background(), netip.MustParseAddr("203.0.113.9"))
	blocked, cc := v.Refuse(), v.Country
	if next.geo != geoKept || !blocked || cc != "RU" || err != nil {
		t.Errorf("a reload whose database fails: %s, %v %q %v; want the database in use kept", next.geo, blocked, cc, err)
	}
}

func TestRestartOnly(t *testing.T) {
	a, b := config.Default(), config.Default()
	b.Milter.Listen, b.Log.Format, b.Milter.RejectReserved = "unix:/run/mxdetour/milter.sock", "json", false
	if d := cmp.Diff([]string{"milter.listen", "log.format"}, restartOnly(a, b)); d != "" {
		t.Errorf("restart-only settings changed (-want +got):\n%s", d)
	}
}

// TestGeoDataAge: a database older than max_age is a stale metric and a
// warning in the log; a fresh one is neither (the doctor's finding is
// tested beside the doctor).
func TestGeoDataAge(t *testing.T) {
	now := time.Now()
	old, fresh := datedDB(t, now.Add(-40*24*time.Hour)), datedDB(t, now.Add(-2*24*time.Hour))
	for _, tc := range []struct {
		name, file string
		stale      float64
	}{
		{"stale", old, 1},
		{"fresh", fresh, 0},
		{"missing", filepath.Join(t.TempDir(), "none.mmdb"), -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Milter.Geo.Source, cfg.Milter.Geo.MMDBFile, cfg.Milter.Geo.BlockCountries = "mmdb", tc.file, []string{"RU"}
			b := Build(cfg, zaptest.NewLogger(t), nil)
			defer b.st.Geo.Close()
			reg := prometheus.NewRegistry()
			reg.MustRegister(stateCollector(func() *Built { return b }))
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
			(&Daemon{log: zap.New(core)}).report(b) // at start and at each reload
			warned := logs.FilterMessageSnippet("older than milter.geo.max_age").Len() == 1
			if warned != (tc.stale == 1) {
				t.Errorf("log warning %v, want %v: %v", warned, tc.stale == 1, logs.All())
			}
		})
	}
}
