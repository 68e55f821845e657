package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/policyd/admin"
	"github.com/mxdetour/mxdetour/policyd/block"
	"github.com/mxdetour/mxdetour/policyd/policydtest"
)

// The README's recipe against the running binary: the daemon learns
// blocks from the delivery log, a person runs `blocks forget` and then
// reloads; only the forgotten block goes, from the file and from routing,
// and `blocks` shows within a second what the daemon learned (issue #11).
func TestBlocksForgetThenReload(t *testing.T) {
	z := dnstest.Zone{}
	for _, d := range []string{"a.mxd", "b.mxd", "c.mxd"} {
		z[d] = dnstest.Records{MX: []lookup.MX{{Host: "mx." + d, Pref: 10}}}
		z["mx."+d] = dnstest.Records{A: []string{"192.0.2.30"}}
	}
	srv := dnstest.New(t, z)
	cfg, _, smap := policydtest.WriteConfig(t, srv.Addr(), "")
	dir := filepath.Dir(cfg)
	mailLog := filepath.Join(dir, "mail.log")
	os.WriteFile(mailLog, nil, 0o640)
	daemon := startDaemon(t, cfg, smap)
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", smap))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	const relayed = "OK relay:[mx03.example.net]:587"
	routes := func(want map[string]string) bool {
		for dom, w := range want {
			if askSocketmap(t, r, c, "u@"+dom) != w {
				return false
			}
		}
		return true
	}
	waitRoutes := func(want map[string]string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !routes(want) {
			if time.Now().After(deadline) {
				t.Fatalf("the daemon does not route as %v", want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	refuse := func(dom string) {
		f, err := os.OpenFile(mailLog, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fmt.Fprintf(f, "%s mx1 postfix/smtp[1]: ABCDE1: to=<u@%s>, relay=mx.%s[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=5.7.1, status=bounced (host mx.%s[192.0.2.1] said: 554 5.7.1 Service unavailable; Client host [192.0.2.5] blocked using zen.spamhaus.org (in reply to RCPT TO command))\n",
			time.Now().Format(time.RFC3339), dom, dom, dom)
	}
	blocks := func() []string {
		out, err := exec.Command(bin, "blocks", "-config", cfg, "-json").Output()
		if err != nil {
			t.Fatalf("blocks: %v", err)
		}
		var bs []block.Block
		if err := json.Unmarshal(out, &bs); err != nil {
			t.Fatalf("blocks -json: %v\n%s", err, out)
		}
		var doms []string
		for _, b := range bs {
			doms = append(doms, b.Domain)
		}
		return doms
	}
	waitBlocks := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for got := blocks(); !slices.Equal(got, want); got = blocks() {
			if time.Now().After(deadline) {
				t.Fatalf("blocks %v, want %v", got, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	refuse("a.mxd")
	refuse("b.mxd")
	waitBlocks("a.mxd", "b.mxd") // saved within a second, not at the 10-second tick
	if out, err := exec.Command(bin, "blocks", "-config", cfg, "forget", "a.mxd").CombinedOutput(); err != nil {
		t.Fatalf("blocks forget: %v\n%s", err, out)
	}
	refuse("c.mxd")
	waitRoutes(map[string]string{"c.mxd": relayed}) // learned, maybe not yet saved
	daemon.Process.Signal(syscall.SIGHUP)
	waitRoutes(map[string]string{"a.mxd": "NOTFOUND ", "b.mxd": relayed, "c.mxd": relayed})
	waitBlocks("b.mxd", "c.mxd")
}

// `blocks` and `check` show each block's kind and route: a block of our
// IPv6 address only sends over IPv4, a block from a state file written
// before routes existed needs the relay.
func TestBlocksAndCheckShowRoute(t *testing.T) {
	srv := dnstest.New(t, policydtest.Zone())
	cfg, _, _ := policydtest.WriteConfig(t, srv.Addr(), "") // with an ipv4 transport
	now := time.Now().UTC()
	ts := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339) }
	state := `{"version": 1, "offset": {}, "blocks": [
	  {"domain": "plain.mxd", "mx_host": "mx.plain.mxd", "kind": "gmail-ipv6-auth", "route": "ipv4",
	   "reply": "421-4.7.0 [2001:db8::25] ... does not meet IPv6 sending guidelines", "learned": "` + ts(0) + `", "expires": "` + ts(time.Hour) + `"},
	  {"domain": "old.mxd", "mx_host": "mx.old.mxd", "kind": "dnsbl:zen.spamhaus.org",
	   "reply": "554 5.7.1 blocked using zen.spamhaus.org", "learned": "` + ts(0) + `", "expires": "` + ts(time.Hour) + `"}]}`
	os.WriteFile(filepath.Join(filepath.Dir(cfg), "state.json"), []byte(state), 0o640)

	out, err := exec.Command(bin, "blocks", "-config", cfg, "-json").Output()
	if err != nil {
		t.Fatalf("blocks -json: %v", err)
	}
	var bs []block.Block
	if err := json.Unmarshal(out, &bs); err != nil {
		t.Fatalf("blocks -json: %v\n%s", err, out)
	}
	var got []string
	for _, b := range bs {
		got = append(got, b.Domain+" "+b.Kind+" "+b.Route)
	}
	if diff := cmp.Diff([]string{"old.mxd dnsbl:zen.spamhaus.org relay", "plain.mxd gmail-ipv6-auth ipv4"}, got); diff != "" {
		t.Errorf("blocks -json (-want +got):\n%s", diff)
	}
	out, _ = exec.Command(bin, "blocks", "-config", cfg).Output()
	for _, w := range []string{"plain.mxd\tmx=mx.plain.mxd\tprovider=\tkind=gmail-ipv6-auth\troute=ipv4\t", "old.mxd\tmx=mx.old.mxd\tprovider=\tkind=dnsbl:zen.spamhaus.org\troute=relay\t"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("blocks output lacks %q:\n%s", w, out)
		}
	}

	out, err = exec.Command(bin, "check", "-config", cfg, "-json", "plain.mxd").CombinedOutput()
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	var res []admin.CheckResult
	if err := json.Unmarshal(out, &res); err != nil || len(res) != 1 {
		t.Fatalf("check -json: %v\n%s", err, out)
	}
	r := res[0]
	if r.Route != "ipv4" || r.Transport != "smtp-ipv4:" || r.Reason != "learned-ipv6-block" || r.Socketmap != "OK smtp-ipv4:" ||
		r.Block == nil || r.Block.Kind != "gmail-ipv6-auth" || r.Block.Route != "ipv4" || r.Block.MXHost != "mx.plain.mxd" {
		t.Errorf("check -json: %+v block %+v", r, r.Block)
	}
	out, _ = exec.Command(bin, "check", "-config", cfg, "plain.mxd").CombinedOutput()
	if w := "block:     gmail-ipv6-auth (route ipv4) learned for plain.mxd from mx.plain.mxd, until "; !strings.Contains(string(out), w) {
		t.Errorf("check output lacks %q:\n%s", w, out)
	}
}
