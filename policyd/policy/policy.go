// Package policy speaks Postfix's policy delegation protocol
// (SMTPD_POLICY_README): a request is name=value lines ended by an empty
// line, the answer one "action=..." line and an empty line, many requests
// in turn on one persistent connection.
//
// On a malformed request the server logs it and closes the connection
// without answering, as the protocol document asks; Postfix then applies
// its default_action (DUNNO in our snippet).
package policy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/connserver"
)

// Request holds the attributes mxdetour uses; the others are skipped.
type Request struct {
	Request       string // must be "smtpd_access_policy"
	ProtocolState string // CONNECT, EHLO, MAIL, RCPT, DATA, END-OF-MESSAGE, ...
	QueueID       string // empty at the first RCPT of a message
	Instance      string // the same for a whole transaction
	Sender        string
	Recipient     string
	ClientAddress string
	SASLUsername  string
	// RecipientCount is the number of accepted recipients, at DATA and
	// END-OF-MESSAGE (0 before); PolicyContext is the check_policy_service
	// policy_context= of Postfix 3.1+ ("limits": count only, never route).
	RecipientCount int
	PolicyContext  string

	// LocalUser and RecipientDomains are mxdetour's own attributes,
	// which Postfix never sends: mxdetour-milter asks with them for mail
	// submitted with the sendmail command (pickup), which never passes
	// smtpd. LocalUser is the local account that submitted the message,
	// RecipientDomains its recipients' domains, separated by spaces.
	LocalUser        string
	RecipientDomains string

	// The kept values are gathered in raw while the request is read and
	// become strings in one allocation at its end; raw and kept are
	// reused by the connection's next request.
	raw  []byte
	kept []span
}

// span is where in raw a value for field is.
type span struct {
	field    *string
	from, to int
}

// ErrTooLarge is returned for a request over the size limit.
var ErrTooLarge = errors.New("policy request too large")

// ReadRequest reads one request into req (reset first). max bounds its
// size in bytes. It returns io.EOF when the client closed between requests.
func ReadRequest(r *bufio.Reader, req *Request, max int) error {
	*req = Request{raw: req.raw[:0], kept: req.kept[:0]}
	n := 0
	for lines := 0; ; lines++ {
		line, err := r.ReadSlice('\n')
		n += len(line)
		if n > max {
			return ErrTooLarge
		}
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return ErrTooLarge
			}
			if errors.Is(err, io.EOF) && lines == 0 && len(line) == 0 {
				return io.EOF
			}
			return fmt.Errorf("policy request cut short: %w", err)
		}
		line = line[:len(line)-1]
		if len(line) == 0 {
			if lines == 0 {
				return errors.New("policy request is empty")
			}
			break
		}
		name, value, ok := bytes.Cut(line, []byte{'='})
		if !ok || len(name) == 0 {
			return fmt.Errorf("policy request line %q has no name=value", truncate(line))
		}
		if bytes.IndexByte(line, 0) >= 0 {
			return errors.New("policy request contains NUL")
		}
		req.set(name, value)
	}
	req.keep()
	if req.Request != "smtpd_access_policy" {
		return fmt.Errorf("policy request=%q, want smtpd_access_policy", req.Request)
	}
	return nil
}

// set stores the attributes we use.
func (req *Request) set(name, value []byte) {
	switch string(name) {
	case "request":
		req.Request = intern(value)
	case "protocol_state":
		req.ProtocolState = intern(value)
	case "queue_id":
		req.gather(&req.QueueID, value)
	case "instance":
		req.gather(&req.Instance, value)
	case "sender":
		req.gather(&req.Sender, value)
	case "recipient":
		req.gather(&req.Recipient, value)
	case "client_address":
		req.gather(&req.ClientAddress, value)
	case "sasl_username":
		req.gather(&req.SASLUsername, value)
	case "recipient_count":
		req.RecipientCount = atoi(value)
	case "policy_context":
		req.PolicyContext = intern(value)
	case "local_user":
		req.gather(&req.LocalUser, value)
	case "recipient_domains":
		req.gather(&req.RecipientDomains, value)
	}
}

// gather copies a value for field into raw (the last of a repeated
// attribute wins).
func (req *Request) gather(field *string, value []byte) {
	req.kept = append(req.kept, span{field, len(req.raw), len(req.raw) + len(value)})
	req.raw = append(req.raw, value...)
}

// keep makes the gathered values strings, all in one allocation.
func (req *Request) keep() {
	if len(req.kept) == 0 {
		return
	}
	all := string(req.raw)
	for _, sp := range req.kept {
		*sp.field = all[sp.from:sp.to]
	}
}

// common are the values every request repeats: interned, they cost no
// allocation.
var common = []string{"smtpd_access_policy", "RCPT", "DATA", "END-OF-MESSAGE", "MAIL", "CONNECT", "EHLO", "HELO", "VRFY", "ETRN", "limits"}

func intern(b []byte) string {
	for _, c := range common {
		if string(b) == c {
			return c
		}
	}
	return string(b)
}

// atoi reads a count without allocating; anything but digits (or a
// number beyond any recipient limit) is 0.
func atoi(b []byte) int {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' || n > 1<<30 {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

func truncate(b []byte) []byte {
	if len(b) > 60 {
		return b[:60]
	}
	return b
}

// Handler decides one request; it returns the action ("DUNNO", "FILTER
// relay:[x]:587", ...).
type Handler interface {
	Policy(ctx context.Context, r *Request) string
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
	var req Request
	for c.Await() {
		if err := ReadRequest(c.R, &req, s.max); err != nil {
			if !errors.Is(err, io.EOF) {
				c.Malformed("policy", err)
			}
			return
		}
		action := s.answer(&req, c)
		c.W.WriteString("action=")
		c.W.WriteString(action)
		c.W.WriteString("\n\n")
		err := c.W.Flush()
		c.Done()
		if err != nil {
			return
		}
	}
}

// answer runs the handler; a panic in it answers DUNNO.
func (s *Server) answer(req *Request, c *connserver.Conn) (action string) {
	defer func() {
		if p := recover(); p != nil {
			c.Recover(p)
			action = "DUNNO"
		}
	}()
	return s.h.Policy(context.Background(), req)
}
