package e2e

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// submission is one message to hand to the test Postfix.
type submission struct {
	ClientAddr string // XCLIENT ADDR: the client address Postfix and the milter see
	Login      string // XCLIENT LOGIN: an authenticated user ("" = none)
	From       string
	To         []string
	Header     string // header block, CRLF line ends; From/To/Subject added if empty
	Body       string
}

// result is what Postfix answered.
type result struct {
	Mail  string            // reply to MAIL FROM
	Rcpt  map[string]string // reply to each RCPT TO
	Data  string            // final reply to DATA ("" when not reached)
	Error error
}

// accepted reports whether Postfix took the message for delivery.
func (r result) accepted() bool { return strings.HasPrefix(r.Data, "250") }

// send submits m to Postfix's smtpd at addr, speaking SMTP by hand so that
// every reply is visible to the test.
func send(t *testing.T, addr string, m submission) result {
	t.Helper()
	res := result{Rcpt: map[string]string{}}
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		res.Error = err
		return res
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(c)
	cmd := func(line string) string {
		if line != "" {
			fmt.Fprintf(c, "%s\r\n", line)
		}
		var last string
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return "EOF " + err.Error()
			}
			last = strings.TrimRight(l, "\r\n")
			if len(last) < 4 || last[3] != '-' {
				return last
			}
		}
	}
	cmd("") // greeting
	cmd("EHLO client.test.invalid")
	if m.ClientAddr != "" || m.Login != "" {
		x := "XCLIENT NAME=[UNAVAILABLE]"
		if m.ClientAddr != "" {
			x += " ADDR=" + m.ClientAddr
		}
		if m.Login != "" {
			x += " LOGIN=" + m.Login
		}
		if rep := cmd(x); !strings.HasPrefix(rep, "220") {
			res.Error = fmt.Errorf("XCLIENT: %s", rep)
			return res
		}
		cmd("EHLO client.test.invalid")
	}
	res.Mail = cmd("MAIL FROM:<" + m.From + ">")
	if !strings.HasPrefix(res.Mail, "250") {
		cmd("QUIT")
		return res
	}
	ok := 0
	for _, rc := range m.To {
		rep := cmd("RCPT TO:<" + rc + ">")
		res.Rcpt[rc] = rep
		if strings.HasPrefix(rep, "250") {
			ok++
		}
	}
	if ok == 0 {
		cmd("QUIT")
		return res
	}
	if rep := cmd("DATA"); !strings.HasPrefix(rep, "354") {
		res.Data = rep
		return res
	}
	hdr := m.Header
	if hdr == "" {
		hdr = fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: mxdetour end-to-end\r\nDate: %s\r\nMessage-ID: <%d@client.test.invalid>\r\n",
			m.From, strings.Join(m.To, ">, <"), time.Now().Format(time.RFC1123Z), time.Now().UnixNano())
	}
	body := m.Body
	if body == "" {
		body = "Hello from the end-to-end test.\r\n"
	}
	var b strings.Builder
	b.WriteString(hdr)
	b.WriteString("\r\n")
	for _, l := range strings.SplitAfter(body, "\n") {
		if strings.HasPrefix(l, ".") {
			b.WriteString(".")
		}
		b.WriteString(l)
	}
	b.WriteString(".\r\n")
	fmt.Fprint(c, b.String())
	res.Data = cmd("")
	cmd("QUIT")
	return res
}
