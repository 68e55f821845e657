// Command fakedns serves the benchmark zone (dnstest.BenchZone) on
// loopback with internal/lookup/dnstest: d0.bench ... dN.bench, their MX
// at Google (even numbers) or at a host of their own (odd numbers).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
)

func main() {
	n := flag.Int("domains", 100, "domains in the zone")
	flag.Parse()
	z := dnstest.BenchZone(*n)
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
