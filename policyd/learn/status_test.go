package learn

import "testing"

// TestStatusFilter: the keys are what Postfix's smtp client hands the
// delivery status filter ("STATUS REASON", dsn_filter.c); only permanent
// refusals of our address with a route around them are made temporary.
func TestStatusFilter(t *testing.T) {
	c, err := NewClassifier(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	const (
		zen   = "5.7.1 host mx.victim.zz[192.0.2.99] said: 554 5.7.1 Service unavailable; Client host [198.51.100.2] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/198.51.100.2 (in reply to RCPT TO command)"
		s3150 = "5.7.1 host tenant-zz.mail.protection.outlook.com[192.0.2.7] said: 550 5.7.1 Unfortunately, messages from [198.51.100.2] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150). (in reply to MAIL FROM command)"
		pp    = "5.7.0 host mxb-001.gslb.pphosted.com[192.0.2.40] said: 550 5.7.0 Blocked - see https://ipcheck.proofpoint.com/?ip=198.51.100.2 (in reply to end of DATA command)"
		v6    = "5.7.1 host gmail-smtp-in.l.google.com[2001:db8::1a] said: 550-5.7.1 [2001:db8:1::2] Our system has detected that this message does not meet IPv6 sending guidelines regarding PTR records and authentication. Please review https://support.google.com/mail/?p=ipv6_authentication_error for more information. (in reply to end of DATA command)"
		user  = "5.1.1 host mx.victim.zz[192.0.2.99] said: 550 5.1.1 <nobody@victim.zz>: Recipient address rejected: User unknown (in reply to RCPT TO command)"
		temp  = "4.7.1 host mx.victim.zz[192.0.2.99] said: 451 4.7.1 Client host [198.51.100.2] blocked using zen.spamhaus.org (in reply to RCPT TO command)"
		ours  = "5.7.1 host mx03.example.net[192.0.2.3] said: 554 5.7.1 Client host [198.51.100.2] blocked using zen.spamhaus.org (in reply to RCPT TO command)"
	)
	full := NewStatusFilter(c, true, true, []string{"mx03.example.net:587"})
	noRelay := NewStatusFilter(c, false, true, nil)
	for _, tc := range []struct {
		name string
		f    *StatusFilter
		key  string
		want string // "" = unchanged
	}{
		{"dnsbl", full, zen, "4" + zen[1:]},
		{"microsoft S3150", full, s3150, "4" + s3150[1:]},
		{"proofpoint", full, pp, "4" + pp[1:]},
		{"ipv6 only", full, v6, "4" + v6[1:]},
		{"user unknown", full, user, ""},
		{"already temporary", full, temp, ""},
		{"our own relay", full, ours, ""},
		{"success", full, "2.0.0 host mx.victim.zz[192.0.2.99] said: 250 2.0.0 Ok: queued as X", ""},
		{"no relay: nowhere else to go", noRelay, zen, ""},
		{"no relay, ipv6 block: ipv4 is enough", noRelay, v6, "4" + v6[1:]},
		{"garbage", full, "x", ""},
		{"empty", full, "", ""},
	} {
		got, _, ok := tc.f.Filter(tc.key)
		if ok != (tc.want != "") || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
}

func FuzzStatusFilter(f *testing.F) {
	f.Add("5.7.1 host mx.victim.zz[192.0.2.99] said: 554 5.7.1 blocked using zen.spamhaus.org")
	f.Add("5.1.1 x")
	c, _ := NewClassifier(nil, nil)
	sf := NewStatusFilter(c, true, true, []string{"relay.zz"})
	f.Fuzz(func(t *testing.T, key string) {
		got, _, ok := sf.Filter(key)
		if ok && (len(got) != len(key) || got[0] != '4' || got[1:] != key[1:]) {
			t.Fatalf("%q -> %q", key, got)
		}
	})
}
