package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/alert"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
	"github.com/mxdetour/mxdetour/policyd/policydtest"
)

// TestReloadSwapsTheRuntime: SIGHUP applies every reloadable part of a new
// configuration at once — providers and rules (the engine), [alerts] —
// on the connections Postfix already holds, and a broken file keeps the
// running configuration.
func TestReloadSwapsTheRuntime(t *testing.T) {
	srv := dnstest.New(t, policydtest.Zone())
	var mu sync.Mutex
	var hooks []alert.Payload
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p alert.Payload
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		hooks = append(hooks, p)
	}))
	defer hook.Close()
	cfg, _, smap := policydtest.WriteConfig(t, srv.Addr(), "")
	base, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	daemon, out := startDaemonOutput(t, cfg, smap)
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", smap))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	const relayed = "OK relay:[mx03.example.net]:587"
	answers := func(want map[string]string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			bad := ""
			for rcpt, w := range want {
				if got := askSocketmap(t, r, c, rcpt); got != w {
					bad += fmt.Sprintf(" %s=%q (want %q)", rcpt, got, w)
				}
			}
			if bad == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("answers:%s", bad)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	answers(map[string]string{"a@gmail.mxd": relayed, "b@plain.mxd": "NOTFOUND "})

	rewrite := func(extra string) {
		t.Helper()
		if err := os.WriteFile(cfg, append(append([]byte{}, base...), extra...), 0o644); err != nil {
			t.Fatal(err)
		}
		daemon.Process.Signal(syscall.SIGHUP)
	}
	// Our IPv6 address, named in [self] by the new file, is listed on the
	// default provider's zone: destinations nobody claims go by IPv4, and
	// the postmaster's webhook, configured by the same reload, hears of it.
	srv.Set(lookup.ReverseName(netip.MustParseAddr("2001:db8::25"))+".zen.spamhaus.org", dnstest.Records{A: []string{"127.0.0.3"}})
	rewrite(fmt.Sprintf(`[providers.google]
route = "never"
[[rules]]
domain = "rule.mxd"
route = "relay"
[self]
ipv4 = ["192.0.2.25"]
ipv6 = ["2001:db8::25"]
[alerts]
webhook_url = "%s/hook"
interval = "0s"
`, hook.URL))
	answers(map[string]string{"a@gmail.mxd": "NOTFOUND ", "b@rule.mxd": relayed, "c@plain.mxd": "OK smtp-ipv4:"})
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(hooks)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no alert for the listing")
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	e := hooks[0].Events[0]
	mu.Unlock()
	if e.Kind != "listed" || e.Fields["address"] != "2001:db8::25" || e.Fields["zone"] != "zen.spamhaus.org" ||
		!strings.Contains(e.Fields["routes"], "default: route ipv4-when-listed") {
		t.Errorf("alert %+v", e)
	}

	rewrite("[providers.google]\nroute = \"sometimes\"\n") // broken: the running configuration stays
	testutil.Eventually(t, "the reload refused", func() bool { return strings.Contains(out.String(), "reload failed") })
	answers(map[string]string{"a@gmail.mxd": "NOTFOUND ", "b@rule.mxd": relayed, "c@plain.mxd": "OK smtp-ipv4:"})

	rewrite("")
	answers(map[string]string{"a@gmail.mxd": relayed, "b@rule.mxd": "NOTFOUND ", "c@plain.mxd": "NOTFOUND "})
}
