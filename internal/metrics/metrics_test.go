package metrics

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/mxdetour/mxdetour/internal/connserver"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/testutil"
)

// TestNewRegistryServed scrapes a real endpoint: the runtime, process and
// build metrics are there next to a daemon's own.
func TestNewRegistryServed(t *testing.T) {
	reg := NewRegistry("1.2.3")
	Counter(reg, "mxdetour_test_total", "A daemon's own counter.", func() float64 { return 7 })
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	srv, err := Serve(addr, reg, false, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if resp, err := http.Get("http://" + addr + "/debug/pprof/"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("profiles served without pprof = true: %v %v", resp, err)
	}

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\ngo_goroutines ",
		"\ngo_memstats_heap_inuse_bytes ",
		"\nprocess_resident_memory_bytes ",
		"\nprocess_open_fds ",
		fmt.Sprintf("\nmxdetour_build_info{goversion=%q,version=\"1.2.3\"} 1\n", runtime.Version()),
		"\nmxdetour_test_total 7\n",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", strings.TrimSpace(want))
		}
	}
}

// TestServePprof: with pprof the Go profiles are served beside the
// metrics, a CPU profile included.
func TestServePprof(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	srv, err := Serve(addr, NewRegistry("dev"), true, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, path := range []string{"/debug/pprof/heap?debug=1", "/debug/pprof/profile?seconds=1", "/metrics"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("GET %s: %s, %d bytes", path, resp.Status, len(body))
		}
	}
}

// TestServeOff: an empty address serves nothing, and closing that is safe.
func TestServeOff(t *testing.T) {
	srv, err := Serve("", NewRegistry("dev"), true, zaptest.NewLogger(t))
	if srv != nil || err != nil {
		t.Fatalf("Serve(\"\") = %v, %v", srv, err)
	}
	srv.Close()
}

// TestLookupsOneMeaningPerLabel: cache outcomes, stale answers, upstream
// outcomes and failed lookups are separate metrics, each from its own
// counter.
func TestLookupsOneMeaningPerLabel(t *testing.T) {
	reg := prometheus.NewRegistry()
	Lookups(reg, "x", func() lookup.Stats {
		return lookup.Stats{Hits: 1, Misses: 2, Upstream: 9, Errors: 3, Stale: 4, Answered: 5, UpstreamErrors: 6, Entries: 7}
	})
	want := map[string]float64{
		`x_dns_cache_entries`:                   7,
		`x_dns_cache_total{result="hit"}`:       1,
		`x_dns_cache_total{result="miss"}`:      2,
		`x_dns_failures_total`:                  3,
		`x_dns_stale_total`:                     4,
		`x_dns_upstream_total{result="answer"}`: 5,
		`x_dns_upstream_total{result="error"}`:  6,
	}
	if diff := cmp.Diff(want, gather(t, reg)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestConnections: each listener's counters, read from its server at
// scrape time, under its own label; none before the listeners exist.
func TestConnections(t *testing.T) {
	reg := prometheus.NewRegistry()
	var a, b connserver.Stats
	var ls []Listener
	Connections(reg, "x", func() []Listener { return ls })
	if got := gather(t, reg); len(got) != 0 {
		t.Fatalf("before the listeners: %v", got)
	}
	ls = []Listener{{"policy", &a}, {"socketmap", &b}}
	a.Accepted.Add(3)
	a.Open.Add(2)
	b.Refused.Add(4)
	b.Evicted.Add(5)
	a.Requests.Add(6)
	b.Malformed.Add(1)
	b.Panics.Add(1)
	a.AcceptErrors.Add(7)
	want := map[string]float64{}
	for _, name := range []string{"connections_accepted_total", "connections_open", "connections_refused_total",
		"connections_evicted_total", "requests_total", "malformed_requests_total", "panics_total", "accept_errors_total"} {
		for _, l := range []string{"policy", "socketmap"} {
			want[fmt.Sprintf("x_%s{listener=%q}", name, l)] = 0
		}
	}
	for k, v := range map[string]float64{
		`x_connections_accepted_total{listener="policy"}`:   3,
		`x_connections_open{listener="policy"}`:             2,
		`x_connections_refused_total{listener="socketmap"}`: 4,
		`x_connections_evicted_total{listener="socketmap"}`: 5,
		`x_requests_total{listener="policy"}`:               6,
		`x_malformed_requests_total{listener="socketmap"}`:  1,
		`x_panics_total{listener="socketmap"}`:              1,
		`x_accept_errors_total{listener="policy"}`:          7,
	} {
		want[k] = v
	}
	if diff := cmp.Diff(want, gather(t, reg)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// gather returns reg's series as name{label="value",...} -> value.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			if len(ls) > 0 {
				key += "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			}
		}
	}
	return out
}
