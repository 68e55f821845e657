package metrics

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

// TestNewRegistryServed scrapes a real endpoint: the runtime, process and
// build metrics are there next to a daemon's own.
func TestNewRegistryServed(t *testing.T) {
	reg := NewRegistry("1.2.3")
	Counter(reg, "mxdetour_test_total", "A daemon's own counter.", func() float64 { return 7 })
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	srv, err := Serve(addr, reg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

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

// TestServeOff: an empty address serves nothing, and closing that is safe.
func TestServeOff(t *testing.T) {
	srv, err := Serve("", NewRegistry("dev"), zaptest.NewLogger(t))
	if srv != nil || err != nil {
		t.Fatalf("Serve(\"\") = %v, %v", srv, err)
	}
	srv.Close()
}
