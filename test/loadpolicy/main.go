// Command loadpolicy loads a policy delegation or socketmap server with N
// persistent connections, each sending one request at a time as Postfix
// does, and reports requests per second and latency percentiles.
//
//	loadpolicy -proto socketmap -addr 127.0.0.1:10041 -conns 8 -duration 10s
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
)

func main() {
	proto := flag.String("proto", "socketmap", "policy or socketmap")
	addr := flag.String("addr", "127.0.0.1:10041", "server address")
	conns := flag.Int("conns", 8, "persistent connections")
	duration := flag.Duration("duration", 10*time.Second, "measuring time")
	warmup := flag.Duration("warmup", time.Second, "time before measuring (fills caches)")
	domains := flag.Int("domains", 100, "distinct recipient domains (d0.bench ... dN.bench)")
	flag.Parse()

	var mu sync.Mutex
	var all []time.Duration
	var errs int
	start := time.Now()
	measureFrom := start.Add(*warmup)
	end := measureFrom.Add(*duration)
	var wg sync.WaitGroup
	for i := range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat, err := worker(*proto, *addr, i, *domains, measureFrom, end)
			mu.Lock()
			all = append(all, lat...)
			if err != nil {
				errs++
				fmt.Fprintln(os.Stderr, "connection", i, err)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(all)
	pct := func(p float64) time.Duration {
		if len(all) == 0 {
			return 0
		}
		return all[min(len(all)-1, int(float64(len(all))*p))]
	}
	fmt.Printf("proto=%s conns=%d requests=%d rate=%.0f/s p50=%v p90=%v p99=%v max=%v errors=%d\n",
		*proto, *conns, len(all), float64(len(all))/duration.Seconds(), pct(0.50), pct(0.90), pct(0.99), pct(1), errs)
	if errs > 0 {
		os.Exit(1)
	}
}

func worker(proto, addr string, id, domains int, from, end time.Time) ([]time.Duration, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	lat := make([]time.Duration, 0, 1<<16)
	buf := make([]byte, 0, 256)
	// One transaction per connection, as one smtpd process has: a shared
	// instance would make the limits serialise every connection on it.
	instance := "\nclient_address=192.0.2.1\ninstance=" + strconv.Itoa(id) + ".1\n\n"
	for n := 0; ; n++ {
		t0 := time.Now()
		if t0.After(end) {
			return lat, nil
		}
		rcpt := "user" + strconv.Itoa(n) + "@d" + strconv.Itoa((id*7919+n)%domains) + ".bench"
		if proto == "policy" {
			w.WriteString("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nqueue_id=\nsender=s@sender.bench\nrecipient=")
			w.WriteString(rcpt)
			w.WriteString(instance)
		} else {
			buf = append(buf[:0], "transport "...)
			buf = append(buf, rcpt...)
			w.WriteString(strconv.Itoa(len(buf)))
			w.WriteByte(':')
			w.Write(buf)
			w.WriteByte(',')
		}
		if err := w.Flush(); err != nil {
			return lat, err
		}
		if err := readReply(proto, r); err != nil {
			return lat, err
		}
		if t0.After(from) {
			lat = append(lat, time.Since(t0))
		}
	}
}

func readReply(proto string, r *bufio.Reader) error {
	if proto == "policy" {
		for {
			l, err := r.ReadSlice('\n')
			if err != nil {
				return err
			}
			if len(l) == 1 {
				return nil
			}
		}
	}
	l, err := r.ReadSlice(':')
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(string(l[:len(l)-1]))
	if err != nil {
		return err
	}
	_, err = r.Discard(n + 1)
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
