package filter

import (
	"encoding/binary"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/d--j/go-milter"
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/milter/dkim"
)

// countingConn counts the milter packets the server writes: each one is
// a reply the MTA waits for (or a modification at end of message).
type countingConn struct {
	net.Conn
	n       *atomic.Int64
	pending int // bytes of the current packet still to come; -1: in a length prefix
	prefix  []byte
}

// Write counts the packets in p before writing it: counted after, the last
// packet of a message could be read by the client (and the count checked)
// before this goroutine has added it.
func (c *countingConn) Write(p []byte) (int, error) {
	for q := p; len(q) > 0; {
		if c.pending == 0 {
			need := 4 - len(c.prefix)
			take := min(need, len(q))
			c.prefix = append(c.prefix, q[:take]...)
			q = q[take:]
			if len(c.prefix) == 4 {
				c.pending = int(binary.BigEndian.Uint32(c.prefix))
				c.prefix = c.prefix[:0]
				c.n.Add(1)
			}
			continue
		}
		take := min(c.pending, len(q))
		c.pending -= take
		q = q[take:]
	}
	return c.Conn.Write(p)
}

type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &l.n}, nil
}

// benchHeader is a message as a mail client submits it.
var benchHeader = [][2]string{
	{"From", " Alice <alice@example.org>"}, {"To", " Bob <bob@partner.example.net>"},
	{"Subject", " Quarterly figures"}, {"Date", " Mon, 24 Nov 2026 10:00:00 +0000"},
	{"Message-ID", " <4f1e2d3c@mail.example.org>"}, {"MIME-Version", " 1.0"},
	{"Content-Type", " text/plain; charset=utf-8; format=flowed"}, {"Content-Transfer-Encoding", " 8bit"},
	{"User-Agent", " Mozilla Thunderbird"}, {"Content-Language", " en-US"},
}

// benchSession runs one SMTP session per iteration, as Postfix's smtpd
// and cleanup do: a new milter connection, CONNECT, HELO, MAIL, RCPT,
// DATA, ten header fields, a 4 kB body, end of message. It reports the
// packets our milter wrote per message (replies the MTA waited for, plus
// the inserted signatures).
func benchSession(b *testing.B, auth string, mutate func(*fixture)) {
	f := New(state(b, mutate), zap.NewNop())
	benchServer(b, auth, f.ServerOptions())
}

func benchServer(b *testing.B, auth string, opts []milter.Option) {
	ln, err := net.Listen("unix", filepath.Join(b.TempDir(), "m.sock"))
	if err != nil {
		b.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	srv := milter.NewServer(opts...)
	go srv.Serve(cl)
	b.Cleanup(func() { srv.Close() })
	client := milter.NewClient("unix", ln.Addr().String())
	body := strings.Repeat("A line of a typical message body, about seventy characters long..\r\n", 60)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := benchMessage(client, auth, body); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cl.n.Load())/float64(b.N), "packets/op")
}

func benchMessage(c *milter.Client, auth, body string) error {
	macros := milter.NewMacroBag()
	macros.Set(milter.MacroDaemonAddr, "127.0.0.1")
	macros.Set(milter.MacroDaemonName, "smtpd")
	s, err := c.Session(macros)
	if err != nil {
		return err
	}
	defer s.Close()
	if _, err := s.Conn("client.example", milter.FamilyInet, 40000, "192.0.2.10"); err != nil {
		return err
	}
	if _, err := s.Helo("client.example"); err != nil {
		return err
	}
	macros.Set(milter.MacroAuthAuthen, auth)
	macros.Set(milter.MacroQueueId, "4ABCDEF")
	if _, err := s.Mail("<alice@example.org>", ""); err != nil {
		return err
	}
	if _, err := s.Rcpt("<bob@partner.example.net>", ""); err != nil {
		return err
	}
	if _, err := s.DataStart(); err != nil {
		return err
	}
	for _, h := range benchHeader {
		if _, err := s.HeaderField(h[0], h[1], nil); err != nil {
			return err
		}
	}
	if _, err := s.HeaderEnd(); err != nil {
		return err
	}
	_, _, err = s.BodyReadFrom(strings.NewReader(body))
	return err
}

func oneKey(sel string) func(*fixture) {
	return func(fx *fixture) {
		var ks []dkim.KeyRow
		for _, k := range fx.keys {
			if k.Selector == sel {
				ks = append(ks, k)
			}
		}
		fx.keys = ks
	}
}

func BenchmarkSessionEd25519(b *testing.B) { benchSession(b, "alice", oneKey("ed")) }
func BenchmarkSessionRSA2048(b *testing.B) { benchSession(b, "alice", oneKey("rsa")) }
func BenchmarkSessionDual(b *testing.B)    { benchSession(b, "alice", nil) }

// BenchmarkSessionUnsigned is inbound mail: not authenticated, not signed.
func BenchmarkSessionUnsigned(b *testing.B) { benchSession(b, "", nil) }

type noop struct{ milter.NoOpMilter }

// BenchmarkSessionFloor is a milter that does nothing, with go-milter's
// defaults (test/nullmilter): what the protocol and the client cost.
func BenchmarkSessionFloor(b *testing.B) {
	benchServer(b, "alice", []milter.Option{
		milter.WithMilter(func() milter.Milter { return noop{} }),
		milter.WithActions(milter.OptAddHeader | milter.OptChangeHeader),
		milter.WithProtocols(milter.OptHeaderLeadingSpace | milter.OptNoUnknown | milter.OptNoHelo),
	})
}
