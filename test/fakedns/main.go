// Command fakedns serves the benchmark zone on loopback with
// internal/lookup/dnstest: d0.bench ... dN.bench, their MX at Google (even
// numbers) or at a host of their own (odd numbers).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
)

func main() {
	n := flag.Int("domains", 100, "domains in the zone")
	flag.Parse()
	z := dnstest.Zone{}
	for i := range *n {
		d := "d" + strconv.Itoa(i) + ".bench"
		host := "mx." + d
		if i%2 == 0 {
			host = "aspmx.l.google.com"
		}
		z[d] = dnstest.Records{MX: []lookup.MX{{Host: host, Pref: 10}}, TTL: 3600}
	}
	s, err := dnstest.Start(z)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(s.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	<-sig
	s.Close()
}
