package pickup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Request is what the milter knows of a message a local account submitted.
type Request struct {
	QueueID    string
	Sender     string // envelope sender, without <>
	LocalUser  string // account name, or "uid:N"
	Recipients int
	Domains    []string // the recipients' domains, each once
}

// Client asks mxdetour-policyd over its policy socket, as Postfix's
// check_policy_service does: a persistent connection, one request at a
// time on it. A connection that fails is dropped; the next request opens
// another.
type Client struct {
	network, address string
	dial             func(ctx context.Context, network, address string) (net.Conn, error)

	mu     sync.Mutex
	idle   []net.Conn
	closed bool
}

// maxIdle bounds the connections kept open between requests: pickup is
// one process, cleanup a few.
const maxIdle = 4

// NewClient returns a client of addr, "host:port", "unix:/path" (as
// policyd.policy_listen is written) or "unix:@name", an abstract unix
// socket (Linux: a name, not a file), as the packaged
// mxdetour-policyd.socket makes beside its socket in Postfix's private/
// directory, which the milter's user cannot enter.
func NewClient(addr string) (*Client, error) {
	c := &Client{network: "tcp", address: addr, dial: (&net.Dialer{}).DialContext}
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		c.network, c.address = "unix", p
		if strings.HasPrefix(p, "@") {
			c.dial = dialAbstract
		}
	} else if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("policy socket %q: neither host:port nor unix:/path", addr)
	}
	return c, nil
}

// dialAbstract dials an abstract unix socket (Go's "@name") and checks
// who made it. An abstract name has no owner and no file mode: any local
// user may bind it first, while systemd does not hold it (the socket unit
// stopped), and would then be told the local accounts' mail and decide
// what is held. The listening socket's credentials, which the kernel
// gives the client as its peer's (SO_PEERCRED, fixed at listen), must be
// root's (systemd made it) or the milter's own user's.
func dialAbstract(ctx context.Context, network, address string) (net.Conn, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	uid, err := peerUID(conn)
	if err == nil && uid != 0 && uid != uint32(os.Geteuid()) {
		err = fmt.Errorf("%s is bound by uid %d, neither root (systemd) nor this daemon's user: not asked", address, uid)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// peerUID is the uid of a unix connection's peer.
func peerUID(conn net.Conn) (uint32, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return 0, errors.New("not a unix connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, fmt.Errorf("reading the peer's credentials: %w", credErr)
	}
	return cred.Uid, nil
}

// Addr is the socket asked, as configured.
func (c *Client) Addr() string {
	if c.network == "unix" {
		return "unix:" + c.address
	}
	return c.address
}

// Ask sends r and returns policyd's action ("DUNNO", "HOLD mxdetour:
// ..."), within ctx's deadline. A connection kept from an earlier request
// that fails (policyd closed it while idle) is retried once on a new one.
func (c *Client) Ask(ctx context.Context, r *Request) (string, error) {
	req := encode(r)
	for {
		conn, reused, err := c.get(ctx)
		if err != nil {
			return "", err
		}
		action, err := roundTrip(ctx, conn, req)
		if err == nil {
			c.put(conn)
			return action, nil
		}
		conn.Close()
		if !reused || ctx.Err() != nil {
			return "", err
		}
	}
}

// Close closes the idle connections; requests under way finish, and
// their connections are closed after.
func (c *Client) Close() {
	c.mu.Lock()
	idle := c.idle
	c.idle, c.closed = nil, true
	c.mu.Unlock()
	for _, conn := range idle {
		conn.Close()
	}
}

func (c *Client) get(ctx context.Context) (net.Conn, bool, error) {
	c.mu.Lock()
	if n := len(c.idle); n > 0 {
		conn := c.idle[n-1]
		c.idle = c.idle[:n-1]
		c.mu.Unlock()
		return conn, true, nil
	}
	c.mu.Unlock()
	conn, err := c.dial(ctx, c.network, c.address)
	if err != nil {
		return nil, false, err
	}
	return conn, false, nil
}

func (c *Client) put(conn net.Conn) {
	c.mu.Lock()
	if !c.closed && len(c.idle) < maxIdle {
		c.idle = append(c.idle, conn)
		conn = nil
	}
	c.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}

// maxAnswer bounds policyd's answer.
const maxAnswer = 4096

func roundTrip(ctx context.Context, conn net.Conn, req []byte) (string, error) {
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			return "", err
		}
	}
	if _, err := conn.Write(req); err != nil {
		return "", err
	}
	br := bufio.NewReaderSize(conn, maxAnswer)
	action, seen := "", false
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return "", fmt.Errorf("reading the answer: %w", err)
		}
		line = line[:len(line)-1]
		if len(line) == 0 {
			break
		}
		if a, ok := strings.CutPrefix(string(line), "action="); ok {
			action, seen = a, true
		}
	}
	if br.Buffered() > 0 {
		return "", errors.New("answer followed by more than one empty line")
	}
	if !seen {
		return "", errors.New("answer without action=")
	}
	_ = conn.SetDeadline(time.Time{})
	return action, nil
}

// encode writes r as a policy delegation request. Values are cut at the
// first line break or NUL: the protocol has no quoting.
func encode(r *Request) []byte {
	var b strings.Builder
	attr := func(name, value string) {
		if i := strings.IndexAny(value, "\r\n\x00"); i >= 0 {
			value = value[:i]
		}
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(value)
		b.WriteByte('\n')
	}
	attr("request", "smtpd_access_policy")
	attr("protocol_state", "END-OF-MESSAGE")
	attr("protocol_name", "SENDMAIL")
	attr("policy_context", "limits")
	attr("queue_id", r.QueueID)
	attr("instance", "mxdetour-milter."+r.QueueID)
	attr("sender", r.Sender)
	attr("recipient_count", strconv.Itoa(r.Recipients))
	attr("local_user", r.LocalUser)
	attr("recipient_domains", strings.Join(r.Domains, " "))
	b.WriteByte('\n')
	return []byte(b.String())
}

// Refusal reads policyd's action: whether a limit refused the message,
// and its reason. HOLD, DEFER, REJECT and 4xx/5xx are all refusals: for
// mail the sendmail command submitted Postfix can apply none but a hold
// (a reject at this stage bounces nothing back to a script that has
// gone; a tempfail makes pickup retry the file for ever).
func Refusal(action string) (reason string, refused bool) {
	verb, rest, _ := strings.Cut(strings.TrimSpace(action), " ")
	switch v := strings.ToUpper(verb); {
	case v == "HOLD", v == "DEFER", v == "DEFER_IF_PERMIT", v == "REJECT":
	case len(v) == 3 && (v[0] == '4' || v[0] == '5') && v[1] >= '0' && v[1] <= '9' && v[2] >= '0' && v[2] <= '9':
		// "450 4.7.1 text": drop the enhanced status code too.
		if code, text, ok := strings.Cut(rest, " "); ok && strings.Count(code, ".") == 2 {
			rest = text
		}
	default:
		return "", false
	}
	if rest == "" {
		rest = "mxdetour: limit exceeded"
	}
	return rest, true
}
