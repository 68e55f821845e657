// Package socketmap speaks Postfix's socketmap protocol (socketmap_table(5)):
// netstrings ("LEN:DATA,") carrying "NAME KEY" requests and "OK data",
// "NOTFOUND ", "TEMP reason", "TIMEOUT reason" or "PERM reason" replies.
//
// Postfix 3.7 treats a bare "OK" as not found, so OK always carries data;
// replies are cut to Postfix's 100,000-byte limit.
package socketmap

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/connserver"
)

// MaxReply is Postfix's socketmap_max_reply_size default.
const MaxReply = 100000

// Reply is one answer.
type Reply struct {
	Status string // OK, NOTFOUND, TEMP, TIMEOUT, PERM
	Data   string
}

// OK is a found value.
func OK(data string) Reply { return Reply{"OK", data} }

// NotFound is "no such key": Postfix uses its default.
func NotFound() Reply { return Reply{Status: "NOTFOUND"} }

// Temp is a temporary failure: Postfix defers (451 4.3.0 at RCPT).
func Temp(reason string) Reply { return Reply{"TEMP", reason} }

// String is the reply as sent, without netstring framing.
func (r Reply) String() string { return r.Status + " " + r.Data }

// ReadNetstring reads one netstring of at most max bytes into buf's
// storage and returns its payload.
func ReadNetstring(r *bufio.Reader, max int, buf []byte) ([]byte, error) {
	n := 0
	digits := 0
	for {
		b, err := r.ReadByte()
		if err != nil {
			if digits == 0 && errors.Is(err, io.EOF) {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("netstring length cut short: %w", err)
		}
		if b == ':' {
			break
		}
		if b < '0' || b > '9' {
			return nil, fmt.Errorf("netstring length has %q", b)
		}
		digits++
		n = n*10 + int(b-'0')
		if digits > 9 || n > max {
			return nil, fmt.Errorf("netstring longer than %d bytes", max)
		}
	}
	if digits == 0 {
		return nil, errors.New("netstring without a length")
	}
	if cap(buf) < n+1 {
		buf = make([]byte, n+1)
	}
	buf = buf[:n+1]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("netstring cut short: %w", err)
	}
	if buf[n] != ',' {
		return nil, errors.New("netstring does not end in ','")
	}
	return buf[:n], nil
}

// AppendNetstring appends the framed reply to dst.
func AppendNetstring(dst []byte, r Reply) []byte {
	status, data := r.Status, r.Data
	if status == "OK" && data == "" {
		status = "NOTFOUND" // a bare OK means not found to Postfix 3.7 anyway
	}
	l := len(status) + 1 + len(data)
	if l > MaxReply {
		data = data[:MaxReply-len(status)-1]
		l = MaxReply
	}
	dst = strconv.AppendInt(dst, int64(l), 10)
	dst = append(dst, ':')
	dst = append(dst, status...)
	dst = append(dst, ' ')
	dst = append(dst, data...)
	return append(dst, ',')
}

// SplitRequest splits "NAME KEY" at the first space; keys may hold spaces.
func SplitRequest(p []byte) (name, key string, err error) {
	n, k, ok := bytes.Cut(p, []byte{' '})
	if !ok || len(n) == 0 || len(k) == 0 {
		return "", "", fmt.Errorf("socketmap request %q is not \"NAME KEY\"", p)
	}
	return string(n), string(k), nil
}

// Handler answers one lookup.
type Handler interface {
	Lookup(ctx context.Context, name, key string) Reply
}

// Options bound what clients may do.
type Options = connserver.Options

// Server serves the protocol.
type Server struct {
	*connserver.Server
	h   Handler
	max int
}

// NewServer returns a server answering with h.
func NewServer(h Handler, o Options, log *zap.Logger) *Server {
	s := &Server{h: h}
	s.Server = connserver.New(o, s.session, log)
	s.max = s.Server.Options().MaxRequestSize
	return s
}

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.Server.Serve(ln) }

func (s *Server) session(c *connserver.Conn) {
	buf := make([]byte, 0, 512)
	out := make([]byte, 0, 256)
	for c.Await() {
		p, err := ReadNetstring(c.R, s.max, buf)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				c.Malformed("socketmap", err)
			}
			return
		}
		name, key, err := SplitRequest(p)
		if err != nil {
			c.Malformed("socketmap", err)
			return
		}
		out = AppendNetstring(out[:0], s.answer(name, key, c))
		_, err = c.W.Write(out)
		if err == nil {
			err = c.W.Flush()
		}
		c.Done()
		if err != nil {
			return
		}
	}
}

// answer runs the handler; a panic in it answers NOTFOUND.
func (s *Server) answer(name, key string, c *connserver.Conn) (r Reply) {
	defer func() {
		if p := recover(); p != nil {
			c.Recover(p)
			r = NotFound()
		}
	}()
	return s.h.Lookup(context.Background(), name, key)
}
