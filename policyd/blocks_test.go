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
	"syscall"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/policyd/block"
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
	cfg, _, smap := writeConfig(t, srv.Addr(), "")
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
