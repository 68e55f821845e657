// Package dnstest runs an authoritative DNS server on loopback for tests:
// zones are plain Go values, every name the zone does not hold gets NXDOMAIN
// (so no test can reach the Internet), and faults (timeouts, SERVFAIL,
// truncation, delays) can be set per name.
package dnstest

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxdetour/mxdetour/internal/lookup"
)

// Records are the records of one name.
type Records struct {
	MX    []lookup.MX // Host "." or "" with Pref 0 is a null MX (RFC 7505)
	A     []string
	AAAA  []string
	TXT   [][]string // each record is its character-strings
	PTR   []string
	CNAME string
	TTL   uint32 // 0 means 300
}

// Zone maps names (any case, trailing dot optional) to their records.
type Zone map[string]Records

// BenchZone is the benchmarks' zone: d0.bench ... d(n-1).bench, their MX
// at Google (even numbers) or at a host of their own without an address
// (odd numbers), an hour's TTL.
func BenchZone(n int) Zone {
	z := Zone{}
	for i := range n {
		d := "d" + strconv.Itoa(i) + ".bench"
		host := "mx." + d
		if i%2 == 0 {
			host = "aspmx.l.google.com"
		}
		z[d] = Records{MX: []lookup.MX{{Host: host, Pref: 10}}, TTL: 3600}
	}
	return z
}

// Fault is a misbehaviour of the server for one name.
type Fault int

const (
	NoFault  Fault = iota
	Timeout        // never answer
	ServFail       // answer SERVFAIL
	Truncate       // answer over UDP with TC set and no records; TCP answers fully
	Refused        // answer REFUSED
)

// Server is a running test DNS server.
type Server struct {
	udp, tcp *dns.Server
	addr     string

	mu      sync.Mutex
	zone    map[string]Records
	faults  map[string]Fault
	delays  map[string]time.Duration
	counts  map[key]int
	total   int
	negTTL  uint32
	closing chan struct{}
	once    sync.Once
}

type key struct {
	name  string
	qtype uint16
}

func canon(name string) string { return dns.CanonicalName(name) }

// New starts a server for the test and stops it when the test ends.
func New(t testing.TB, z Zone) *Server {
	t.Helper()
	s, err := Start(z)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// Start starts a server on 127.0.0.1, UDP and TCP on the same port.
func Start(z Zone) (*Server, error) {
	s := &Server{zone: map[string]Records{}, faults: map[string]Fault{}, delays: map[string]time.Duration{},
		counts: map[key]int{}, negTTL: 60, closing: make(chan struct{})}
	for n, r := range z {
		s.zone[canon(n)] = r
	}
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			lastErr = err
			continue
		}
		s.addr = pc.LocalAddr().String()
		s.udp = &dns.Server{PacketConn: pc, Handler: s}
		s.tcp = &dns.Server{Listener: ln, Handler: s}
		go s.udp.ActivateAndServe() //nolint:errcheck // ends with Close
		go s.tcp.ActivateAndServe() //nolint:errcheck
		return s, nil
	}
	return nil, fmt.Errorf("dnstest: no free port: %w", lastErr)
}

// Options are resolver options pointing at s alone, with the cache rules
// of the embedded configuration and a short timeout: a lost query fails
// the test quickly instead of hanging it.
func (s *Server) Options() lookup.Options {
	return lookup.Options{
		Servers: []string{s.addr}, Timeout: 500 * time.Millisecond, Attempts: 1, CacheSize: 10000,
		MinTTL: 30 * time.Second, MaxTTL: 24 * time.Hour, NegativeMaxTTL: time.Hour,
		ErrorTTL: 5 * time.Second, StaleTTL: time.Hour,
	}
}

// Addr is the server's "127.0.0.1:PORT".
func (s *Server) Addr() string { return s.addr }

// Close stops the server.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.closing)
		_ = s.udp.Shutdown()
		_ = s.tcp.Shutdown()
	})
}

// Set adds or replaces the records of name.
func (s *Server) Set(name string, r Records) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.zone[canon(name)] = r
}

// Delete removes name: it then gets NXDOMAIN.
func (s *Server) Delete(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.zone, canon(name))
}

// SetFault makes the server misbehave for name (NoFault clears it).
func (s *Server) SetFault(name string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[canon(name)] = f
}

// SetDelay makes the server answer name only after d.
func (s *Server) SetDelay(name string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delays[canon(name)] = d
}

// SetNegativeTTL sets the SOA minimum sent with NXDOMAIN and NODATA.
func (s *Server) SetNegativeTTL(ttl uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.negTTL = ttl
}

// Queries returns how many queries for name and qtype arrived.
func (s *Server) Queries(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[key{canon(name), qtype}]
}

// Total returns how many queries arrived.
func (s *Server) Total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// ServeDNS answers one query.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := canon(q.Name)
	_, isUDP := w.RemoteAddr().(*net.UDPAddr)

	s.mu.Lock()
	s.counts[key{name, q.Qtype}]++
	s.total++
	fault, delay := s.faults[name], s.delays[name]
	s.mu.Unlock()

	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-s.closing:
			return
		}
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	switch {
	case fault == Timeout:
		return
	case fault == ServFail:
		m.Rcode = dns.RcodeServerFailure
	case fault == Refused:
		m.Rcode = dns.RcodeRefused
	case fault == Truncate && isUDP:
		m.Truncated = true
	default:
		s.answer(m, name, q.Qtype)
	}
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), false)
	}
	_ = w.WriteMsg(m)
}

func (s *Server) answer(m *dns.Msg, name string, qtype uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range 8 { // follow CNAMEs within the zone
		r, ok := s.zone[name]
		if !ok {
			if len(m.Answer) == 0 {
				m.Rcode = dns.RcodeNameError
			}
			m.Ns = append(m.Ns, s.soa(name))
			return
		}
		ttl := r.TTL
		if ttl == 0 {
			ttl = 300
		}
		hdr := func(t uint16) dns.RR_Header {
			return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
		}
		if r.CNAME != "" && qtype != dns.TypeCNAME {
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: canon(r.CNAME)})
			name = canon(r.CNAME)
			continue
		}
		before := len(m.Answer)
		switch qtype {
		case dns.TypeMX:
			for _, mx := range r.MX {
				host := mx.Host
				if host == "" {
					host = "."
				}
				m.Answer = append(m.Answer, &dns.MX{Hdr: hdr(dns.TypeMX), Preference: mx.Pref, Mx: canon(host)})
			}
		case dns.TypeA:
			for _, a := range r.A {
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: net.ParseIP(a).To4()})
			}
		case dns.TypeAAAA:
			for _, a := range r.AAAA {
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: net.ParseIP(a)})
			}
		case dns.TypeTXT:
			for _, t := range r.TXT {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: split255(t)})
			}
		case dns.TypePTR:
			for _, p := range r.PTR {
				m.Answer = append(m.Answer, &dns.PTR{Hdr: hdr(dns.TypePTR), Ptr: canon(p)})
			}
		case dns.TypeCNAME:
			if r.CNAME != "" {
				m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: canon(r.CNAME)})
			}
		}
		if len(m.Answer) == before {
			m.Ns = append(m.Ns, s.soa(name)) // NODATA (RFC 2308 section 2.2)
		}
		return
	}
}

// soa is the authority record of negative answers; its minimum is the
// negative TTL (RFC 2308 section 4).
func (s *Server) soa(name string) dns.RR {
	zone := "."
	if i := strings.Index(name, "."); i >= 0 && i+1 < len(name) {
		zone = name[i+1:]
	}
	return &dns.SOA{
		Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: s.negTTL},
		Ns:  "ns.dnstest.", Mbox: "hostmaster.dnstest.", Serial: 1, Refresh: 3600, Retry: 600,
		Expire: 86400, Minttl: s.negTTL,
	}
}

// split255 cuts strings longer than a DNS character-string may be (255
// bytes), as a zone file author would.
func split255(in []string) []string {
	var out []string
	for _, s := range in {
		for len(s) > 255 {
			out = append(out, s[:255])
			s = s[255:]
		}
		out = append(out, s)
	}
	return out
}
