// Command smtpload is the real-server suite's SMTP client (test/realserver):
// it sends -n messages to -addr, one session each, -interval apart, the
// recipients taken in turn from -rcpt, each message with the subject
// "PREFIX-I". Every reply that is not a success is printed; it exits 1 if
// any message was refused or not sent.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:25", "SMTP server")
	n := flag.Int("n", 100, "messages")
	interval := flag.Duration("interval", 200*time.Millisecond, "between the starts of two messages")
	from := flag.String("from", "alice@sender-c.zz", "sender (envelope and From:)")
	rcpts := flag.String("rcpt", "", "comma-separated recipients, used in turn")
	prefix := flag.String("prefix", "rs-load", "subject prefix")
	flag.Parse()
	to := strings.Split(*rcpts, ",")
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed int
	)
	start := time.Now()
	for i := 0; i < *n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			subj := fmt.Sprintf("%s-%d", *prefix, i)
			if err := send(*addr, *from, to[i%len(to)], subj); err != nil {
				mu.Lock()
				failed++
				mu.Unlock()
				fmt.Printf("FAILED %s to %s: %v\n", subj, to[i%len(to)], err)
			}
		}(i)
		time.Sleep(*interval)
	}
	wg.Wait()
	fmt.Printf("smtpload: %d sent, %d failed, in %.1fs\n", *n-failed, failed, time.Since(start).Seconds())
	if failed > 0 {
		os.Exit(1)
	}
}

func send(addr, from, to, subj string) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(120 * time.Second))
	r := bufio.NewReader(c)
	expect := func(code string) error {
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return fmt.Errorf("waiting for %s: %v", code, err)
			}
			if len(l) < 4 || !strings.HasPrefix(l, code) {
				return fmt.Errorf("want %s, got %q", code, strings.TrimSpace(l))
			}
			if l[3] == ' ' {
				return nil
			}
		}
	}
	cmd := func(s, code string) error {
		if _, err := fmt.Fprintf(c, "%s\r\n", s); err != nil {
			return err
		}
		if err := expect(code); err != nil {
			return fmt.Errorf("%s: %v", strings.Fields(s)[0], err)
		}
		return nil
	}
	if err := expect("220"); err != nil {
		return err
	}
	if err := cmd("EHLO load.rs.zz", "250"); err != nil {
		return err
	}
	if err := cmd("MAIL FROM:<"+from+">", "250"); err != nil {
		return err
	}
	if err := cmd("RCPT TO:<"+to+">", "250"); err != nil {
		return err
	}
	if err := cmd("DATA", "354"); err != nil {
		return err
	}
	msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s@load.rs.zz>\r\n\r\nload message %s\r\n.",
		from, to, subj, time.Now().Format(time.RFC1123Z), subj, subj)
	if err := cmd(msg, "250"); err != nil {
		return err
	}
	cmd("QUIT", "221")
	return nil
}
