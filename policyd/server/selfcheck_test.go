package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mxdetour/mxdetour/internal/alert"
	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
	"github.com/mxdetour/mxdetour/policyd/admin"
	"github.com/mxdetour/mxdetour/policyd/server"
)

// TestSelfCheckUnknown: with a resolver that answers NXDOMAIN to every
// blocklist name, the self-check says "unknown" with the cause in the log,
// the metrics and `check`, alerts once however often it checks, and once
// more when the zone answers its test point again.
func TestSelfCheckUnknown(t *testing.T) {
	z := zone()
	const testPoint = "2.0.0.127.zen.spamhaus.org"
	delete(z, testPoint) // no blocklist name resolves, nor "org"
	srv := dnstest.New(t, z)
	srv.SetNegativeTTL(0) // the recovery is seen at the next check
	mport := testutil.FreePort(t)
	path := writeConfig(t, srv.Addr(), fmt.Sprintf("[domains]\nfrom_postfix = false\n[self]\nipv4 = [\"192.0.2.25\"]\n[metrics]\npolicyd_listen = \"127.0.0.1:%d\"\n", mport))
	cfg, _, err := config.LoadDefault(path)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	d, err := server.Open(cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	d.UseAlerter(alert.New(alert.Options{}, zap.New(core).Named("alert"))) // logs each alert, sends none
	d.UseResponders(zap.NewNop())
	if err := d.ServeMetrics(cfg); err != nil {
		t.Fatal(err)
	}
	defer d.CloseMetrics()
	checks := func(n int) {
		for range n {
			d.Current().Monitor().CheckNow(context.Background())
		}
	}
	alerts := func(kind string) []observer.LoggedEntry {
		return logs.FilterLoggerName("alert").FilterField(zap.String("kind", kind)).All()
	}

	checks(3)
	if a := alerts("blocklist-unknown"); len(a) != 1 ||
		a[0].Message != "alert: our listings on zen.spamhaus.org are unknown: the resolver answers NXDOMAIN for everything" {
		t.Errorf("alerts %+v, want one naming the zone and the cause", a)
	}
	if n := logs.FilterMessageSnippet("fails its test points").FilterField(zap.String("cause", "nxdomain-for-everything")).Len(); n != 1 {
		t.Errorf("the unknown zone logged %d times, want once", n)
	}
	if n := logs.FilterMessage("our address is not listed").Len(); n != 0 {
		t.Errorf("logged %d times that our address is not listed", n)
	}
	metricsHave(t, mport,
		`mxdetour_policyd_listed{addr="192.0.2.25",zone="zen.spamhaus.org"} -1`,
		`mxdetour_policyd_blocklist_zone_usable{cause="nxdomain-for-everything",zone="zen.spamhaus.org"} 0`)
	checkSays(t, path, "unknown", "nxdomain-for-everything", "not listed",
		"  blocklist: 192.0.2.25 on zen.spamhaus.org: unknown (nxdomain-for-everything: the resolver answers NXDOMAIN")

	// The resolver answers again: told once, and the address is clean.
	srv.Set(testPoint, dnstest.Records{A: []string{"127.0.0.2"}})
	checks(3)
	if a := alerts("blocklist-known"); len(a) != 1 || !strings.Contains(a[0].Message, "zen.spamhaus.org answers its test points again") {
		t.Errorf("alerts %+v, want one recovery", a)
	}
	if n := len(alerts("blocklist-unknown")); n != 1 {
		t.Errorf("%d unknown alerts, want still one", n)
	}
	metricsHave(t, mport,
		`mxdetour_policyd_listed{addr="192.0.2.25",zone="zen.spamhaus.org"} 0`,
		`mxdetour_policyd_blocklist_zone_usable{cause="",zone="zen.spamhaus.org"} 1`)
	checkSays(t, path, "clean", "", "", "  blocklist: 192.0.2.25 on zen.spamhaus.org: clean\n")
}

func metricsHave(t *testing.T, port int, want ...string) {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, w := range want {
		if !strings.Contains(string(body), w) {
			t.Errorf("metrics lack %q:\n%s", w, body)
		}
	}
}

// checkSays runs `check` on a plain destination (provider default, zone
// zen.spamhaus.org) and compares its listing, as JSON and as text.
func checkSays(t *testing.T, path, state, cause, routedAs, text string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := admin.Check([]string{"-config", path, "-json", "c@plain.mxd"}, &stdout, &stderr); code != 0 {
		t.Fatalf("check -json: exit %d: %s", code, stderr.String())
	}
	var res []admin.CheckResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || len(res[0].Blocklists) != 1 {
		t.Fatalf("check -json: %s", stdout.String())
	}
	l := res[0].Blocklists[0]
	if l.Zone != "zen.spamhaus.org" || l.Addr != "192.0.2.25" || l.State != state || l.Cause != cause || l.RoutedAs != routedAs ||
		(state == "unknown") != (l.Error != "") {
		t.Errorf("check -json blocklist %+v, want %s, cause %q, routed as %q", l, state, cause, routedAs)
	}
	stdout.Reset()
	if code := admin.Check([]string{"-config", path, "c@plain.mxd"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), text) {
		t.Errorf("check: exit %d, output lacks %q:\n%s%s", code, text, stdout.String(), stderr.String())
	}
}
