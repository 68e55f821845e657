package e2e

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// message is what a sink received in one SMTP transaction.
type message struct {
	From  string
	Rcpts []string
	Data  string
}

// sink is a small SMTP server on loopback standing for a destination: "the
// relay (mx03)" or "direct delivery". It records what arrives and can refuse
// recipients of chosen domains with a chosen reply, as a blocking provider does.
type sink struct {
	name string
	addr string
	mu   sync.Mutex
	ln   net.Listener // nil while down
	msgs []message
	// refuse maps a recipient domain to the reply given at RCPT.
	refuse map[string]string
}

func newSink(t *testing.T, name string) *sink {
	t.Helper()
	return newSinkAt(t, name, "127.0.0.1")
}

// newSinkAt is newSink on another loopback address (127.0.0.2 ...).
func newSinkAt(t *testing.T, name, host string) *sink {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{name: name, addr: ln.Addr().String(), ln: ln, refuse: map[string]string{}}
	t.Cleanup(s.down)
	go s.serve(ln)
	return s
}

func (s *sink) port() int {
	_, p, _ := net.SplitHostPort(s.addr)
	n, _ := strconv.Atoi(p)
	return n
}

// down stops accepting connections (sessions under way go on): a
// destination that refuses connections.
func (s *sink) down() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
}

// up listens again on the same address.
func (s *sink) up() error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	go s.serve(ln)
	return nil
}

// Refuse makes the sink answer reply at RCPT for recipients in domain; an
// empty reply accepts them again.
func (s *sink) Refuse(domain, reply string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if reply == "" {
		delete(s.refuse, domain)
		return
	}
	s.refuse[domain] = reply
}

// Received returns the recipients delivered so far, one entry per recipient.
func (s *sink) Received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var r []string
	for _, m := range s.msgs {
		r = append(r, m.Rcpts...)
	}
	return r
}

// Messages returns a copy of the messages received.
func (s *sink) Messages() []message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]message(nil), s.msgs...)
}

func (s *sink) has(rcpt string) bool {
	for _, r := range s.Received() {
		if strings.EqualFold(r, rcpt) {
			return true
		}
	}
	return false
}

func (s *sink) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go s.session(c)
	}
}

func (s *sink) session(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	reply := func(line string) {
		fmt.Fprintf(w, "%s\r\n", line)
		w.Flush()
	}
	reply("220 " + s.name + ".sink.test ESMTP")
	var cur message
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb := strings.ToUpper(strings.SplitN(line, " ", 2)[0])
		switch verb {
		case "EHLO":
			reply("250-" + s.name + ".sink.test")
			reply("250-8BITMIME")
			reply("250 SIZE 104857600")
		case "HELO":
			reply("250 " + s.name + ".sink.test")
		case "MAIL":
			cur = message{From: addrOf(line)}
			reply("250 2.1.0 Ok")
		case "RCPT":
			rcpt := addrOf(line)
			if refusal := s.refusal(rcpt); refusal != "" {
				reply(refusal)
				continue
			}
			cur.Rcpts = append(cur.Rcpts, rcpt)
			reply("250 2.1.5 Ok")
		case "DATA":
			if len(cur.Rcpts) == 0 {
				reply("554 5.5.1 No valid recipients")
				continue
			}
			reply("354 End data with <CR><LF>.<CR><LF>")
			var b strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" || l == ".\n" {
					break
				}
				b.WriteString(strings.TrimPrefix(l, "."))
			}
			cur.Data = b.String()
			s.mu.Lock()
			s.msgs = append(s.msgs, cur)
			s.mu.Unlock()
			cur = message{}
			reply("250 2.0.0 Ok: queued")
		case "RSET":
			cur = message{}
			reply("250 2.0.0 Ok")
		case "NOOP":
			reply("250 2.0.0 Ok")
		case "QUIT":
			reply("221 2.0.0 Bye")
			return
		default:
			reply("502 5.5.2 Command not recognized")
		}
	}
}

func (s *sink) refusal(rcpt string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	at := strings.LastIndexByte(rcpt, '@')
	return s.refuse[strings.ToLower(rcpt[at+1:])]
}

// addrOf returns the address between angle brackets of a MAIL or RCPT line.
func addrOf(line string) string {
	i, j := strings.IndexByte(line, '<'), strings.IndexByte(line, '>')
	if i < 0 || j < i {
		return ""
	}
	return line[i+1 : j]
}
