package main

import (
	"bufio"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/policyd/policydtest"
	"github.com/mxdetour/mxdetour/policyd/socketmap"
)

// TestStatusFilterMap: the socketmap's "status" map is Postfix's
// smtp_delivery_status_filter: a permanent refusal of our address comes
// back temporary with the same text; a refusal of the recipient, and a
// refusal from our own relay, stay as they are (NOTFOUND).
func TestStatusFilterMap(t *testing.T) {
	srv := dnstest.New(t, policydtest.Zone())
	cfg, _, smap := policydtest.WriteConfig(t, srv.Addr(), "")
	startDaemon(t, cfg, smap)
	const block = "5.7.1 host mx.victim.zz[192.0.2.99] said: 554 5.7.1 Service unavailable; Client host [198.51.100.2] blocked using zen.spamhaus.org (in reply to RCPT TO command)"
	for _, tc := range []struct{ key, want string }{
		{block, "OK 4" + block[1:]},
		{"5.1.1 host mx.victim.zz[192.0.2.99] said: 550 5.1.1 <x@victim.zz>: User unknown (in reply to RCPT TO command)", "NOTFOUND "},
		{"5.7.1 host mx03.example.net[192.0.2.3] said: 554 5.7.1 Client host [198.51.100.2] blocked using zen.spamhaus.org", "NOTFOUND "},
	} {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", smap))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		req := "status " + tc.key
		fmt.Fprintf(c, "%d:%s,", len(req), req)
		got, err := socketmap.ReadNetstring(bufio.NewReader(c), 100000, nil)
		c.Close()
		if err != nil || string(got) != tc.want {
			t.Errorf("%.40s...: %q, %v; want %q", tc.key, got, err, tc.want)
		}
	}
}
