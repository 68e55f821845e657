// Command loadmilter loads a milter the way Postfix's smtpd does: N
// concurrent sessions, each a milter connection per SMTP connection
// (connect, MAIL with {auth_authen}, RCPT, header, a ~4 kB body, end of
// message), and reports messages per second and latency percentiles.
//
//	loadmilter -addr 127.0.0.1:10042 -sessions 8 -duration 10s
//	loadmilter -addr unix:/run/mxdetour/milter.sock -sessions 8
//
// The address is host:port (TCP) or unix:/path, as in Postfix's
// smtpd_milters without the inet: prefix.
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/d--j/go-milter"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:10042", "milter address (host:port or unix:/path)")
	sessions := flag.Int("sessions", 8, "concurrent sessions")
	duration := flag.Duration("duration", 10*time.Second, "measuring time")
	auth := flag.String("auth", "alice", "{auth_authen} to send (\"\" = unauthenticated)")
	client := flag.String("client", "127.0.0.1", "client address to present")
	from := flag.String("from", "alice@example.org", "From header address")
	flag.Parse()
	network, address := splitAddr(*addr)

	body := strings.Repeat("A line of a typical message body, about seventy characters long..\r\n", 60)
	end := time.Now().Add(*duration)
	var mu sync.Mutex
	var lat []time.Duration
	var errs int
	var wg sync.WaitGroup
	for range *sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := milter.NewClient(network, address)
			var mine []time.Duration
			for time.Now().Before(end) {
				t0 := time.Now()
				if err := message(c, *auth, *client, *from, body); err != nil {
					mu.Lock()
					errs++
					mu.Unlock()
					fmt.Fprintln(os.Stderr, err)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(float64(len(lat))*p))]
	}
	fmt.Printf("sessions=%d messages=%d rate=%.0f/s p50=%v p90=%v p99=%v errors=%d\n",
		*sessions, len(lat), float64(len(lat))/duration.Seconds(), pct(0.5), pct(0.9), pct(0.99), errs)
}

// splitAddr maps unix:/path to the unix network, anything else to TCP.
func splitAddr(a string) (network, address string) {
	if p, ok := strings.CutPrefix(a, "unix:"); ok {
		return "unix", p
	}
	return "tcp", strings.TrimPrefix(a, "inet:")
}

func message(c *milter.Client, auth, client, from, body string) error {
	macros := milter.NewMacroBag()
	macros.Set(milter.MacroDaemonAddr, "127.0.0.1")
	macros.Set(milter.MacroDaemonName, "smtpd")
	s, err := c.Session(macros)
	if err != nil {
		return err
	}
	defer s.Close()
	if _, err := s.Conn("client.example", milter.FamilyInet, 40000, client); err != nil {
		return err
	}
	if _, err := s.Helo("client.example"); err != nil {
		return err
	}
	macros.Set(milter.MacroAuthAuthen, auth)
	macros.Set(milter.MacroQueueId, "4ABCDEF")
	if _, err := s.Mail("<"+from+">", ""); err != nil {
		return err
	}
	if _, err := s.Rcpt("<bob@partner.example.net>", ""); err != nil {
		return err
	}
	if _, err := s.DataStart(); err != nil {
		return err
	}
	for _, h := range [][2]string{{"From", " <" + from + ">"}, {"To", " <bob@partner.example.net>"},
		{"Subject", " load test"}, {"Date", " Mon, 24 Nov 2026 10:00:00 +0000"}, {"Message-ID", " <1@example.org>"}} {
		if _, err := s.HeaderField(h[0], h[1], nil); err != nil {
			return err
		}
	}
	if _, err := s.HeaderEnd(); err != nil {
		return err
	}
	_, act, err := s.BodyReadFrom(strings.NewReader(body))
	if err != nil {
		return err
	}
	if act.Type != milter.ActionAccept && act.Type != milter.ActionContinue {
		return fmt.Errorf("final action %v", act)
	}
	return nil
}
