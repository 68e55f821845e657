// Command fakedns is the real-server suite's DNS server (test/realserver):
// an authoritative server for the records of one zone file in master-file
// format (RFC 1035; several $ORIGINs may appear, comments as keygen prints
// them are fine), on UDP and TCP. The file is read again whenever it
// changes, so the suite publishes a record by appending it. Names it does
// not hold are NXDOMAIN; every answer is authoritative.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

type store struct {
	file  string
	mu    sync.Mutex
	mtime time.Time
	size  int64
	rrs   map[string][]dns.RR // canonical owner name -> records
}

// load reads the zone file again if it changed since the last read.
func (s *store) load() error {
	fi, err := os.Stat(s.file)
	if err != nil {
		return err
	}
	if s.rrs != nil && fi.ModTime().Equal(s.mtime) && fi.Size() == s.size {
		return nil
	}
	f, err := os.Open(s.file)
	if err != nil {
		return err
	}
	defer f.Close()
	rrs := map[string][]dns.RR{}
	zp := dns.NewZoneParser(f, ".", s.file)
	zp.SetDefaultTTL(300)
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		n := dns.CanonicalName(rr.Header().Name)
		rrs[n] = append(rrs[n], rr)
	}
	if err := zp.Err(); err != nil {
		return err
	}
	s.rrs, s.mtime, s.size = rrs, fi.ModTime(), fi.Size()
	log.Printf("loaded %s: %d names", s.file, len(rrs))
	return nil
}

func (s *store) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)
	s.mu.Lock()
	if err := s.load(); err != nil {
		log.Printf("zone file: %v", err)
	}
	rrs, exists := s.rrs[name]
	s.mu.Unlock()
	for _, rr := range rrs {
		if rr.Header().Rrtype == q.Qtype || q.Qtype == dns.TypeANY {
			c := dns.Copy(rr)
			c.Header().Name = q.Name
			m.Answer = append(m.Answer, c)
		}
	}
	if !exists {
		m.Rcode = dns.RcodeNameError
	}
	if len(m.Answer) == 0 {
		m.Ns = append(m.Ns, soa(name))
	}
	if *verbose {
		log.Printf("%s %s -> %s, %d answers", dns.TypeToString[q.Qtype], q.Name, dns.RcodeToString[m.Rcode], len(m.Answer))
	}
	if err := w.WriteMsg(m); err != nil {
		log.Printf("write: %v", err)
	}
}

// soa is a negative answer's SOA (RFC 2308), at the name's parent domain.
func soa(name string) dns.RR {
	zone := "."
	if labels := dns.SplitDomainName(name); len(labels) > 1 {
		zone = dns.Fqdn(strings.Join(labels[len(labels)-2:], "."))
	}
	rr, _ := dns.NewRR(fmt.Sprintf("%s 60 IN SOA ns.%s hostmaster.%s 1 3600 600 86400 60", zone, zone, zone))
	return rr
}

var verbose = flag.Bool("v", false, "log every query")

func main() {
	listen := flag.String("listen", "127.0.0.53:53", "address for UDP and TCP")
	zone := flag.String("zone", "/etc/fakedns.zone", "zone file (master-file format)")
	flag.Parse()
	log.SetFlags(0)
	s := &store{file: *zone}
	if err := s.load(); err != nil {
		log.Fatalf("fakedns: %v", err)
	}
	errs := make(chan error, 2)
	for _, n := range []string{"udp", "tcp"} {
		srv := &dns.Server{Addr: *listen, Net: n, Handler: s}
		go func() { errs <- srv.ListenAndServe() }()
	}
	log.Printf("serving %s on %s (udp, tcp)", *zone, *listen)
	log.Fatalf("fakedns: %v", <-errs)
}
