// Package grafana holds the Grafana dashboard of both daemons
// (mxdetour.json) and the test that keeps it honest: every metric its
// PromQL expressions name is one the daemons export.
package grafana

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
)

// TestDashboardMetricsExported builds both daemons, starts them on
// loopback with metrics on (policyd with learning, a blocklist self-check
// and a fleet, so its optional metrics exist too; the milter with a DKIM
// key), makes one decision, and checks that each metric the dashboard
// queries is on one of the two /metrics pages.
func TestDashboardMetricsExported(t *testing.T) {
	used := dashboardMetrics(t, "mxdetour.json")
	if len(used) < 20 {
		t.Fatalf("only %d metric names found in the dashboard: %v", len(used), used)
	}
	dir := t.TempDir()
	policyd, milter := build(t, dir, "policyd"), build(t, dir, "milter")
	pm, mm := startPolicyd(t, dir, policyd), startMilter(t, dir, milter)

	var missing []string
	deadline := time.Now().Add(15 * time.Second)
	for {
		exported := scrape(t, pm)
		for name := range scrape(t, mm) {
			exported[name] = true
		}
		missing = missing[:0]
		for _, name := range used {
			if !exported[name] {
				missing = append(missing, name)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // the blocklist self-check runs at start
	}
	if len(missing) > 0 {
		t.Errorf("the dashboard queries metrics no daemon exports: %v", missing)
	}
}

// TestMetricNames checks the extraction itself on expressions of the kinds
// the dashboard uses.
func TestMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum by (route, reason) (rate(mxdetour_policyd_decisions_total{instance=~"$instance"}[$__rate_interval]))`,
			[]string{"mxdetour_policyd_decisions_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(x_seconds_bucket{a="b,c"}[5m])))`, []string{"x_seconds_bucket"}},
		{`time() - max by (addr, zone) (last_ts)`, []string{"last_ts"}},
		{`sum(rate(a_total{result="hit"}[1m])) / sum(rate(a_total[1m]))`, []string{"a_total"}},
		{`m{state!="loaded"} > bool 0 and on (instance) up`, []string{"m", "up"}},
	} {
		got := metricNames(tc.expr)
		if !slices.Equal(got, tc.want) {
			t.Errorf("metricNames(%q) = %v, want %v", tc.expr, got, tc.want)
		}
	}
}

// dashboardMetrics returns the sorted metric names of every expression in
// the dashboard at path.
func dashboardMetrics(t *testing.T, path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	set := map[string]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				for _, n := range metricNames(tg.Expr) {
					set[n] = true
				}
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	var names []string
	for n := range set {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

type panel struct {
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

var (
	quoted   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	matchers = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	grouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	ident    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	keywords = map[string]bool{"bool": true, "and": true, "or": true, "unless": true, "offset": true,
		"by": true, "without": true, "on": true, "ignoring": true, "inf": true, "nan": true}
)

// metricNames returns the metric names a PromQL expression selects: the
// identifiers left once strings, label matchers, ranges and grouping
// labels are gone that are no function call and no keyword.
func metricNames(expr string) []string {
	s := quoted.ReplaceAllString(expr, `""`)
	s = matchers.ReplaceAllString(s, " ")
	s = grouping.ReplaceAllString(s, " ")
	var out []string
	for _, m := range ident.FindAllStringSubmatch(s, -1) {
		if m[1] != "" || keywords[strings.ToLower(m[0])] || slices.Contains(out, m[0]) {
			continue // a function, a keyword, or seen
		}
		out = append(out, m[0])
	}
	return out
}

// build compiles ../../NAME into dir.
func build(t *testing.T, dir, name string) string {
	bin := filepath.Join(dir, "mxdetour-"+name)
	cmd := exec.Command("go", "build", "-o", bin, "./"+name)
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	return bin
}

// startPolicyd runs policyd with everything that has metrics switched on
// and asks it one socketmap question; it returns the metrics address.
func startPolicyd(t *testing.T, dir, bin string) string {
	dns := dnstest.New(t, dnstest.Zone{
		"gmail.mxd": {MX: []lookup.MX{{Host: "gmail-smtp-in.l.google.com", Pref: 5}}},
	})
	smap, mport := testutil.FreePort(t), testutil.FreePort(t)
	cfg := filepath.Join(dir, "policyd.toml")
	write(t, cfg, fmt.Sprintf(`[dns]
servers = [%q]
attempts = 1
[policyd]
policy_listen = "127.0.0.1:%d"
socketmap_listen = "127.0.0.1:%d"
[transports]
relay = "relay:[mx03.example.net]:587"
[self]
ipv4 = ["192.0.2.2"]
[learn]
state_file = %q
log_file = %q
[fleet]
redis_url = "redis://127.0.0.1:%d/0"
[metrics]
policyd_listen = "127.0.0.1:%d"
`, dns.Addr(), testutil.FreePort(t), smap, filepath.Join(dir, "state.json"), filepath.Join(dir, "mail.log"),
		testutil.FreePort(t), mport))
	run(t, bin, "-config", cfg)
	c := dial(t, fmt.Sprintf("127.0.0.1:%d", smap))
	defer c.Close()
	req := "transport someone@gmail.mxd"
	fmt.Fprintf(c, "%d:%s,", len(req), req)
	if reply, err := bufio.NewReader(c).ReadString(','); err != nil || !strings.Contains(reply, "OK relay:") {
		t.Fatalf("socketmap answered %q, %v", reply, err)
	}
	return fmt.Sprintf("127.0.0.1:%d", mport)
}

// startMilter runs the milter with a DKIM key; it returns the metrics
// address.
func startMilter(t *testing.T, dir, bin string) string {
	if out, err := exec.Command(bin, "keygen", "-domain", "example.org", "-selector", "ed", "-algorithm", "ed25519", "-dir", dir).CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	lport, mport := testutil.FreePort(t), testutil.FreePort(t)
	cfg := filepath.Join(dir, "milter.toml")
	write(t, cfg, fmt.Sprintf("[milter]\nlisten = \"127.0.0.1:%d\"\n[metrics]\nmilter_listen = \"127.0.0.1:%d\"\n"+
		"[[milter.dkim.keys]]\ndomain = \"example.org\"\nselector = \"ed\"\nkey_file = %q\n",
		lport, mport, filepath.Join(dir, "example.org.ed.key")))
	run(t, bin, "-config", cfg)
	dial(t, fmt.Sprintf("127.0.0.1:%d", lport)).Close()
	return fmt.Sprintf("127.0.0.1:%d", mport)
}

func write(t *testing.T, path, s string) {
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// run starts bin and stops it at the end of the test, showing its output
// when the test failed.
func run(t *testing.T, bin string, args ...string) {
	cmd := exec.Command(bin, args...)
	out := &testutil.LockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(bin), out.String())
		}
	})
}

// dial connects to addr once the daemon listens there.
func dial(t *testing.T, addr string) net.Conn {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scrape returns the names of the series a /metrics page offers: each
// family's name, and for histograms and summaries the _bucket, _sum and
// _count series PromQL selects.
func scrape(t *testing.T, addr string) map[string]bool {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %v %s", addr, err, resp.Status)
	}
	names := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" {
			continue
		}
		switch f[3] {
		case "histogram":
			names[f[2]+"_bucket"], names[f[2]+"_sum"], names[f[2]+"_count"] = true, true, true
		case "summary":
			names[f[2]], names[f[2]+"_sum"], names[f[2]+"_count"] = true, true, true
		default:
			names[f[2]] = true
		}
	}
	return names
}
