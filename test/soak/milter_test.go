package soak

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

// TestMilter soaks mxdetour-milter's listener.
func TestMilter(t *testing.T) {
	began := time.Now()
	dir := t.TempDir()
	listen := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	metrics := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cfg := filepath.Join(dir, "mxdetour.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`[log]
level = "error"
[milter]
listen = %q
[metrics]
milter_listen = %q
`, listen, metrics)), 0o644); err != nil {
		t.Fatal(err)
	}
	d := start(t, milterBin, cfg, metrics, listen)

	n, rnd := requests(t), seed(t)
	r := rand.New(rand.NewPCG(rnd, 99))
	h := &holder{slots: make(chan struct{}, maxHeld)}
	for i := range 200 {
		if !d.alive() {
			t.Fatal("the daemon died during warm-up")
		}
		if err := milterSession(listen); err != nil {
			t.Fatalf("warm-up: %v", err)
		}
		if i%2 == 0 {
			as := common()
			as[r.IntN(len(as))].run(listen, r, h)
		}
	}
	h.wg.Wait()
	baseG, baseRSS := d.baseline(t)

	soak(t, d, listen, n, rnd, milterAttacks(), func() error { return milterSession(listen) })
	if t.Failed() {
		return
	}
	d.recovered(t, baseG, baseRSS)
	t.Logf("soak of the milter took %v", time.Since(began).Round(time.Millisecond))
}

// milterSession is one SMTP session as Postfix's smtpd relays it to the
// milter: a recipient in a reserved domain is refused with 550 5.1.2,
// another is accepted, and the message is accepted at its end.
func milterSession(addr string) error {
	c := milter.NewClient("tcp", addr, milter.WithDialer(&net.Dialer{Timeout: answerWithin}),
		milter.WithReadTimeout(answerWithin), milter.WithWriteTimeout(answerWithin))
	macros := milter.NewMacroBag()
	macros.Set(milter.MacroDaemonName, "smtpd")
	macros.Set(milter.MacroDaemonAddr, "127.0.0.1")
	s, err := c.Session(macros)
	if err != nil {
		return fmt.Errorf("milter session: %w", err)
	}
	defer s.Close()
	step := func(what string, act *milter.Action, err error, want milter.ActionType) error {
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if act.Type != want {
			return fmt.Errorf("%s: action %v (%d %q), want %v", what, act.Type, act.SMTPCode, act.SMTPReply, want)
		}
		return nil
	}
	act, err := s.Conn("client.soak.mxd", milter.FamilyInet, 25000, "192.0.2.1")
	if err := step("connect", act, err, milter.ActionContinue); err != nil {
		return err
	}
	act, err = s.Helo("client.soak.mxd")
	if err := step("HELO", act, err, milter.ActionContinue); err != nil {
		return err
	}
	act, err = s.Mail("<a@soak.mxd>", "")
	if err := step("MAIL", act, err, milter.ActionContinue); err != nil {
		return err
	}
	act, err = s.Rcpt("<x@example.com>", "")
	if err := step("RCPT reserved", act, err, milter.ActionRejectWithCode); err != nil {
		return err
	}
	if act.SMTPCode != 550 || !strings.Contains(act.SMTPReply, "5.1.2") {
		return fmt.Errorf("RCPT reserved: %d %q, want 550 5.1.2", act.SMTPCode, act.SMTPReply)
	}
	act, err = s.Rcpt("<y@partner.mxd>", "")
	if err := step("RCPT", act, err, milter.ActionContinue); err != nil {
		return err
	}
	act, err = s.DataStart()
	if err := step("DATA", act, err, milter.ActionContinue); err != nil {
		return err
	}
	act, err = s.HeaderField("From", " a@soak.mxd", nil)
	if err := step("header", act, err, milter.ActionContinue); err != nil {
		return err
	}
	act, err = s.HeaderEnd()
	if err := step("end of header", act, err, milter.ActionContinue); err != nil {
		return err
	}
	_, act, err = s.BodyReadFrom(strings.NewReader("hello\r\n"))
	return step("end of message", act, err, milter.ActionAccept)
}

// packet frames a milter command: a 4-byte big-endian length, the command
// byte, the data.
func packet(cmd byte, data ...string) []byte {
	body := cmd0(cmd, strings.Join(data, ""))
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func cmd0(cmd byte, data string) []byte { return append([]byte{cmd}, data...) }

// optneg is the MTA's option negotiation as Postfix 3.7 sends it:
// protocol version 6, every action, every protocol option offered.
var optneg = packet('O', string(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 6), 0x1ff), 0x1fffff)))

func after(prefix []byte, p []byte) []byte { return append(append([]byte{}, prefix...), p...) }

func milterAttacks() []attack {
	length := func(n uint32, rest string) []byte { return append(binary.BigEndian.AppendUint32(nil, n), rest...) }
	connect := packet('C', "client.soak.mxd\x00", "4", string([]byte{0x61, 0xa8}), "192.0.2.1\x00")
	return append(common(),
		attack{"zero-length", func(*rand.Rand) []byte { return length(0, "") }, finish},
		attack{"zero-length-after-optneg", func(*rand.Rand) []byte { return after(optneg, length(0, "")) }, finish},
		attack{"huge-length", func(r *rand.Rand) []byte {
			return length([]uint32{0xffffffff, 0x80000000, 512<<20 + 1}[r.IntN(3)], "Cjunk")
		}, finish},
		attack{"large-length-dropped", func(r *rand.Rand) []byte { return length(1<<20+uint32(r.IntN(256<<20)), "Cjunk") }, drop},
		attack{"truncated", func(r *rand.Rand) []byte { return cut(r, after(optneg, connect)) }, finish},
		attack{"truncated-and-dropped", func(r *rand.Rand) []byte { return cut(r, after(optneg, connect)) }, drop},
		attack{"truncated-and-stalled", func(r *rand.Rand) []byte { return cut(r, after(optneg, connect)) }, hold},
		attack{"short-optneg", func(*rand.Rand) []byte { return packet('O', "\x00\x00\x00") }, finish},
		attack{"optneg-version-0", func(*rand.Rand) []byte { return packet('O', strings.Repeat("\x00", 12)) }, finish},
		attack{"unknown-command", func(r *rand.Rand) []byte { return after(optneg, packet('Z', string(randomBytes(r, r.IntN(32))))) }, finish},
		attack{"connect-without-nul", func(*rand.Rand) []byte { return after(optneg, packet('C', "client.soak.mxd")) }, finish},
		attack{"connect-short-address", func(*rand.Rand) []byte { return after(optneg, packet('C', "h\x004\x00")) }, finish},
		attack{"helo-without-nul", func(*rand.Rand) []byte { return after(optneg, after(connect, packet('H', "helo"))) }, finish},
		attack{"mail-without-nul", func(*rand.Rand) []byte { return after(optneg, after(connect, packet('M', "<a@soak.mxd>"))) }, finish},
		attack{"rcpt-without-nul", func(*rand.Rand) []byte { return after(optneg, after(connect, packet('R', "<x@example.com>"))) }, finish},
		attack{"macro-without-nul", func(*rand.Rand) []byte { return after(optneg, packet('D', "Cj")) }, finish},
		attack{"macro-empty", func(*rand.Rand) []byte { return after(optneg, packet('D')) }, finish},
		attack{"header-without-nul", func(*rand.Rand) []byte {
			return after(optneg, after(connect, after(packet('M', "<a@soak.mxd>\x00"), packet('L', "From"))))
		}, finish},
		attack{"body-before-connect", func(r *rand.Rand) []byte { return after(optneg, packet('B', string(randomBytes(r, r.IntN(1024))))) }, finish},
		attack{"end-of-message-first", func(*rand.Rand) []byte { return after(optneg, packet('E')) }, finish},
		attack{"random-packets", func(r *rand.Rand) []byte {
			p := append([]byte{}, optneg...)
			for range 1 + r.IntN(8) {
				p = append(p, packet("ODCHMRTLNBEAQUK"[r.IntN(15)], string(randomBytes(r, r.IntN(64))))...)
			}
			return p
		}, finish},
	)
}
