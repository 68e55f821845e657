package admin

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/geo/geotest"
	"github.com/mxdetour/mxdetour/milter/dkim"
)

// datedDB writes a country database built at built.
func datedDB(t *testing.T, built time.Time) string {
	p := filepath.Join(t.TempDir(), "country.mmdb")
	geotest.WriteDB(t, p, built, map[string]string{"203.0.113.0/24": "RU"})
	return p
}

// TestGeoDataAge: a database older than max_age is a doctor warning; a
// fresh one is OK; one that does not load is critical (the metric and the
// log line are tested in milter/server).
func TestGeoDataAge(t *testing.T) {
	now := time.Now()
	old, fresh := datedDB(t, now.Add(-40*24*time.Hour)), datedDB(t, now.Add(-2*24*time.Hour))
	for _, tc := range []struct {
		name, file string
		status     dkim.Status
		msg        string
	}{
		{"stale", old, dkim.Warning, "40d old, older than milter.geo.max_age (30d)"},
		{"fresh", fresh, dkim.OK, "2d old"},
		{"missing", filepath.Join(t.TempDir(), "none.mmdb"), dkim.Critical, "does not load"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Milter.Geo.Source, cfg.Milter.Geo.MMDBFile, cfg.Milter.Geo.BlockCountries = "mmdb", tc.file, []string{"RU"}
			fs := geoFindings(cfg.Milter.Geo, now)
			if len(fs) != 1 || fs[0].Status != tc.status || !strings.Contains(fs[0].Message, tc.msg) {
				t.Errorf("doctor: %+v, want %v containing %q", fs, tc.status, tc.msg)
			}
		})
	}
}
