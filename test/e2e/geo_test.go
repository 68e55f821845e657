package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/geo/geotest"
	"github.com/mxdetour/mxdetour/internal/testutil"
)

// writeCountryDB writes a MaxMind-format country database placing the
// documentation networks in countries.
func writeCountryDB(t *testing.T, path string, nets map[string]string) {
	geotest.WriteDB(t, path, time.Time{}, nets)
}

// Scenario 4: a client whose address maps to a blocked country is refused
// 550 5.7.1 at MAIL FROM; the same address authenticated is not.
func TestCountryBlock(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	w := newWorld(t, worldOptions{Wiring: "socketmap"})
	db := filepath.Join(w.dir, "country.mmdb")
	writeCountryDB(t, db, map[string]string{"203.0.113.0/24": "RU", "198.51.100.0/24": "DE"})
	w.rewriteConfig(fmt.Sprintf(`
[milter.geo]
block_countries = ["RU"]
source = "mmdb"
mmdb_file = %q
`, db))
	w.milter.waitOutput("reloaded", 10*time.Second)

	res := send(t, w.pf.addr(), submission{ClientAddr: "203.0.113.9", From: "x@outside.e2e", To: []string{"g1@plain.e2e"}})
	if !strings.HasPrefix(res.Mail, "550 5.7.1") || !strings.Contains(res.Mail, "RU") {
		t.Errorf("MAIL FROM from a blocked country: got %q, want 550 5.7.1 naming RU", res.Mail)
	}
	res = send(t, w.pf.addr(), submission{ClientAddr: "203.0.113.9", Login: "roaming", From: "r@sender.e2e", To: []string{"g2@plain.e2e"}})
	if !res.accepted() {
		t.Errorf("authenticated client from a blocked country refused: %+v", res)
	}
	res = send(t, w.pf.addr(), submission{ClientAddr: "198.51.100.7", From: "y@outside.e2e", To: []string{"g3@plain.e2e"}})
	if !res.accepted() {
		t.Errorf("client from an allowed country refused: %+v", res)
	}
	testutil.EventuallyWithin(t, 30*time.Second, "two messages delivered", func() bool { return len(w.direct.Received()) == 2 })
	if w.direct.has("g1@plain.e2e") {
		t.Error("mail from the blocked country was delivered")
	}
}
