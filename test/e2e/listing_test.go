package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
)

// Issue #12: the built-in provider "default" sends every destination no
// other provider claims over the [transports] ipv4 transport while only our
// IPv6 address is listed, and a learned refusal of our IPv6 address does
// the same for one destination; the postmaster hears of both by mail,
// through the real Postfix.

// Our sending addresses, as [self] names them.
const (
	selfIPv4 = "192.0.2.25"
	selfIPv6 = "2001:db8::25"
)

// ipv4Service is contrib/postfix/master.cf's smtp-ipv4 transport. The
// test's [transports] ipv4 value names its own sink as nexthop, so each
// test can tell which way a message went.
const ipv4Service = `smtp-ipv4 unix  -       -       n       -       -       smtp
  -o syslog_name=postfix/$service_name
  -o inet_protocols=ipv4
`

// mxRecords adds a destination to the test DNS: MX mx.DOMAIN at addr, in a
// network of no known provider (so "default" claims it).
func mxRecords(s *dnstest.Server, dom, addr string) {
	s.Set(dom, dnstest.Records{TTL: 60, MX: []lookup.MX{{Host: "mx." + dom, Pref: 10}}})
	s.Set("mx."+dom, dnstest.Records{A: []string{addr}})
	a := netip.MustParseAddr(addr).As4()
	s.Set(fmt.Sprintf("%d.%d.%d.%d.origin.asn.e2e", a[3], a[2], a[1], a[0]),
		dnstest.Records{TXT: [][]string{{"64500 | 192.0.2.0/24 | ZZ | test | 2024-01-01"}}})
}

// reverseName is the DNSBL query name of addr under zone (RFC 5782 section
// 2.4: nibbles for IPv6, octets for IPv4, in reverse), written out here
// rather than taken from the product.
func reverseName(addr, zone string) string {
	a := netip.MustParseAddr(addr)
	var parts []string
	if a.Is4() {
		b := a.As4()
		for i := 3; i >= 0; i-- {
			parts = append(parts, fmt.Sprint(b[i]))
		}
	} else {
		b := a.As16()
		for i := 15; i >= 0; i-- {
			parts = append(parts, fmt.Sprintf("%x", b[i]&0xf), fmt.Sprintf("%x", b[i]>>4))
		}
	}
	return strings.Join(parts, ".") + "." + zone
}

// alertSetup returns the [alerts] table sending to mailTo through the test
// Postfix's sendmail, and a BeforeStart that writes the sendmail wrapper
// (Postfix's sendmail with -C of this instance) once Postfix exists.
func alertSetup(t *testing.T, mailTo, interval string) (cfg string, before func(*world)) {
	wrapper := filepath.Join(t.TempDir(), "sendmail")
	cfg = fmt.Sprintf(`
[alerts]
mail_to = %q
from = "mxdetour@mta.test.invalid"
sendmail = %q
interval = %q
`, mailTo, wrapper, interval)
	return cfg, func(w *world) {
		script := fmt.Sprintf("#!/bin/sh\nexec /usr/sbin/sendmail -C %s \"$@\"\n", w.pf.conf)
		must(t, os.WriteFile(wrapper, []byte(script), 0o755))
	}
}

// transportOf asks policyd's socketmap the way Postfix's trivial-rewrite
// does (Postfix's own socketmap client): "" means not found, i.e. Postfix's
// default route, direct.
func (w *world) transportOf(key string) string {
	w.t.Helper()
	out, err := exec.Command("postmap", "-c", w.pf.conf, "-q", key,
		fmt.Sprintf("socketmap:inet:127.0.0.1:%d:transport", w.ports.socketmap)).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 1 {
		return "" // not found
	}
	if err != nil {
		w.t.Fatalf("postmap -q %s: %v: %s", key, err, out)
	}
	return strings.TrimSpace(string(out))
}

// alertTo returns the first message any of sinks received for rcpt whose
// text contains every one of words.
func alertTo(rcpt string, words []string, sinks ...*sink) (string, *sink) {
	for _, s := range sinks {
	next:
		for _, m := range s.Messages() {
			if len(m.Rcpts) == 0 || !strings.EqualFold(m.Rcpts[0], rcpt) {
				continue
			}
			for _, wd := range words {
				if !strings.Contains(m.Data, wd) {
					continue next
				}
			}
			return m.Data, s
		}
	}
	return "", nil
}

// Our IPv6 address listed on zen.spamhaus.org: mail to a plain domain
// goes by the ipv4 transport; the listing removed, direct again within one
// check interval. The postmaster is told of both changes.
func TestListedIPv6TakesIPv4Transport(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	const interval = 2 * time.Second
	v4 := newSink(t, "ipv4")
	listed := reverseName(selfIPv6, "zen.spamhaus.org")
	alerts, writeSendmail := alertSetup(t, "postmaster@alerts.e2e", "1s")
	w := newWorld(t, worldOptions{
		Wiring:        "socketmap",
		IPv4Transport: fmt.Sprintf("smtp-ipv4:[127.0.0.1]:%d", v4.port()),
		Postfix:       postfixOptions{MasterExtra: ipv4Service},
		ExtraCfg: fmt.Sprintf(`
[self]
ipv4 = [%q]
ipv6 = [%q]
check_interval = %q
`, selfIPv4, selfIPv6, interval) + alerts,
		BeforeStart: func(w *world) {
			writeSendmail(w)
			mxRecords(w.dns, "alerts.e2e", "192.0.2.29")
			// Listed from the first check on: a name first seen NXDOMAIN
			// would be cached as such for the zone's negative TTL.
			// Its TTL (an hour) is far longer than check_interval: the
			// self-check's own cache must not keep it past one interval.
			w.dns.Set(listed, dnstest.Records{TTL: 3600, A: []string{"127.0.0.2"},
				TXT: [][]string{{"https://check.spamhaus.org/query/ip/" + selfIPv6}}})
		},
	})
	w.policyd.waitOutput("our address is listed", 10*time.Second)

	if got, want := w.transportOf("carol@plain.e2e"), fmt.Sprintf("smtp-ipv4:[127.0.0.1]:%d", v4.port()); got != want {
		t.Fatalf("socketmap answer for carol@plain.e2e while listed: %q, want %q", got, want)
	}
	out, err := runCmd(binPolicyd, "check", "-json", "-config", w.cfgPath, "carol@plain.e2e")
	for _, want := range []string{`"provider": "default"`, `"route": "ipv4"`, `"reason": "listed-ipv6-only"`, selfIPv6} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("check -json does not show %s (%v):\n%s", want, err, out)
		}
	}
	if res := send(t, w.pf.addr(), submission{From: "sender@sender.e2e", To: []string{"carol@plain.e2e"}}); !res.accepted() {
		t.Fatalf("not accepted: %+v", res)
	}
	testutil.EventuallyWithin(t, 30*time.Second, "carol at the ipv4 sink", func() bool { return v4.has("carol@plain.e2e") })
	w.pf.waitLog(`postfix/smtp-ipv4/smtp\[\d+\]: \w+: to=<carol@plain\.e2e>.*status=sent`, 10*time.Second)
	testutil.EventuallyWithin(t, 30*time.Second, "the listing alert at a sink", func() bool {
		msg, _ := alertTo("postmaster@alerts.e2e", []string{selfIPv6, "is listed on zen.spamhaus.org"}, v4, w.direct, w.relay)
		return msg != ""
	})

	// Delisted: the self-check keeps no answer longer than one check
	// interval, so the next check sees it, whatever the listing's TTL.
	w.dns.Delete(listed)
	delisted := time.Now()
	testutil.EventuallyWithin(t, 3*interval, "socketmap answering direct after the delisting", func() bool {
		return w.transportOf("dave@plain.e2e") == ""
	})
	took := time.Since(delisted)
	t.Logf("direct again %v after the delisting (check_interval %v)", took.Round(time.Millisecond), interval)
	// One check interval, and two seconds for a loaded machine.
	if limit := interval + 2*time.Second; took > limit {
		t.Errorf("direct again only after %v, want within one check interval (%v, allowing %v)", took, interval, limit)
	}
	// A new recipient (qmgr keeps a resolved address for 30 s) goes direct.
	if res := send(t, w.pf.addr(), submission{From: "sender@sender.e2e", To: []string{"dave@plain.e2e"}}); !res.accepted() {
		t.Fatalf("not accepted: %+v", res)
	}
	testutil.EventuallyWithin(t, 30*time.Second, "dave at the direct sink", func() bool { return w.direct.has("dave@plain.e2e") })
	testutil.EventuallyWithin(t, 30*time.Second, "the delisting alert at a sink", func() bool {
		msg, _ := alertTo("postmaster@alerts.e2e", []string{selfIPv6, "no longer listed on zen.spamhaus.org"}, v4, w.direct, w.relay)
		return msg != ""
	})
	if v4.has("dave@plain.e2e") || w.direct.has("carol@plain.e2e") {
		t.Errorf("wrong way: ipv4 sink got %v, direct sink got %v", v4.Received(), w.direct.Received())
	}
	if r := w.relay.Received(); len(r) != 0 {
		t.Errorf("ipv4-when-listed never relays, but the relay got %v", r)
	}
}

// gmailIPv6Reply is Gmail's refusal of a sender over IPv6 without PTR or
// authentication, as a receiver sends it (multi-line, our address quoted):
// the text of github.com/mailcow/mailcow/issues/800 with the 421 code of
// issue #12, as in policyd/learn's classifier table.
var gmailIPv6Reply = strings.Join([]string{
	"421-4.7.0 [" + selfIPv6 + "      1] Our system has detected that this message does",
	"421-4.7.0 not meet IPv6 sending guidelines regarding PTR records and",
	"421-4.7.0 authentication. Please review",
	"421-4.7.0  https://support.google.com/mail/?p=IPv6AuthError for more information",
	"421 4.7.0 . v5si749738wrb.38 - gsmtp",
}, "\r\n")

// A destination refuses our IPv6 address (Gmail's IPv6 sending guidelines):
// policyd learns it from the delivery log, routes that destination over the
// ipv4 transport (a new recipient at once, the deferred message on its next
// attempt) and the postmaster's alert arrives through Postfix.
func TestIPv6RefusalLearnedTakesIPv4(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	v4 := newSink(t, "ipv4")
	ipv4TP := fmt.Sprintf("smtp-ipv4:[127.0.0.1]:%d", v4.port())
	alerts, writeSendmail := alertSetup(t, "postmaster@alerts.e2e", "0s")
	w := newWorld(t, worldOptions{
		Wiring:        "socketmap",
		IPv4Transport: ipv4TP,
		Postfix:       postfixOptions{MasterExtra: ipv4Service},
		ExtraCfg: fmt.Sprintf(`
[self]
ipv4 = [%q]
ipv6 = [%q]
`, selfIPv4, selfIPv6) + alerts,
		BeforeStart: func(w *world) {
			writeSendmail(w)
			mxRecords(w.dns, "alerts.e2e", "192.0.2.29")
			mxRecords(w.dns, "v6.e2e", "192.0.2.28")
		},
	})
	w.direct.Refuse("v6.e2e", gmailIPv6Reply)
	if got := w.transportOf("first@v6.e2e"); got != "" {
		t.Fatalf("v6.e2e before any refusal: %q, want direct", got)
	}
	start := time.Now()
	if res := send(t, w.pf.addr(), submission{From: "sender@sender.e2e", To: []string{"first@v6.e2e"}}); !res.accepted() {
		t.Fatalf("not accepted: %+v", res)
	}
	w.pf.waitLog(`to=<first@v6\.e2e>.*status=deferred.*IPv6 sending guidelines`, 30*time.Second)

	// Learned: the next recipient there goes by the ipv4 transport at once.
	testutil.EventuallyWithin(t, 15*time.Second, "socketmap answering the ipv4 transport for v6.e2e", func() bool {
		return w.transportOf("second@v6.e2e") == ipv4TP
	})
	t.Logf("v6.e2e routed over IPv4 %v after the submission", time.Since(start).Round(time.Millisecond))
	if res := send(t, w.pf.addr(), submission{From: "sender@sender.e2e", To: []string{"second@v6.e2e"}}); !res.accepted() {
		t.Fatalf("not accepted: %+v", res)
	}
	testutil.EventuallyWithin(t, 30*time.Second, "second@v6.e2e at the ipv4 sink", func() bool { return v4.has("second@v6.e2e") })

	// The postmaster's alert, sent through sendmail, delivered by Postfix.
	var msg string
	var at *sink
	testutil.EventuallyWithin(t, 30*time.Second, "the block alert at a sink", func() bool {
		msg, at = alertTo("postmaster@alerts.e2e", []string{"v6.e2e"}, w.direct, v4, w.relay)
		return msg != ""
	})
	t.Logf("alert at the %s sink %v after the submission", at.name, time.Since(start).Round(time.Millisecond))
	if !strings.Contains(msg, "Auto-Submitted: auto-generated") {
		t.Errorf("alert is not marked Auto-Submitted (RFC 3834):\n%s", msg)
	}
	_, body, _ := strings.Cut(strings.ReplaceAll(msg, "\r\n", "\n"), "\n\n")
	for _, want := range []string{"domain: v6.e2e", "kind: gmail-ipv6-auth", "route: ipv4", "our IPv6 address", "IPv6 sending guidelines"} {
		if !strings.Contains(body, want) {
			t.Errorf("alert body does not say %q:\n%s", want, msg)
		}
	}
	if at != w.direct {
		t.Errorf("alert to postmaster@alerts.e2e arrived at the %s sink, want direct (no listing, no block)", at.name)
	}

	// The deferred message itself: its next attempt is resolved again (after
	// qmgr's 30 s resolve cache, policyd requeues it) and takes IPv4.
	w.flushUntil(60*time.Second, "first@v6.e2e at the ipv4 sink", func() bool { return v4.has("first@v6.e2e") })
	t.Logf("deferred message at the ipv4 sink %v after the submission", time.Since(start).Round(time.Millisecond))
	w.pf.waitLog(`postfix/smtp-ipv4/smtp\[\d+\]: \w+: to=<first@v6\.e2e>.*status=sent`, 10*time.Second)
	// Its next attempt, not a later one: the lookups of second@ and of the
	// alert replaced qmgr's one-entry resolve cache.
	if n := len(regexp.MustCompile(`to=<first@v6\.e2e>.*status=deferred`).FindAllString(w.pf.log(), -1)); n != 1 {
		t.Errorf("first@v6.e2e deferred %d times, want once", n)
	}
	for _, s := range []*sink{w.direct, w.relay} {
		for _, r := range s.Received() {
			if strings.HasSuffix(r, "@v6.e2e") {
				t.Errorf("%s sink received %s", s.name, r)
			}
		}
	}
	out, err := runCmd(binPolicyd, "blocks", "-config", w.cfgPath)
	if err != nil || !strings.Contains(out, "v6.e2e") || !strings.Contains(out, "gmail-ipv6-auth") {
		t.Errorf("`blocks` does not list the IPv6 block of v6.e2e (%v):\n%s", err, out)
	}
}
