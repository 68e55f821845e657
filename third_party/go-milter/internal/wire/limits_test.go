package wire

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// pipe returns the reading end of a net.Pipe whose other end writes each
// of chunks, pausing pause between them, and then stays open.
func pipe(t *testing.T, pause time.Duration, chunks ...[]byte) net.Conn {
	t.Helper()
	r, w := net.Pipe()
	t.Cleanup(func() { r.Close(); w.Close() })
	go func() {
		for i, c := range chunks {
			if i > 0 {
				time.Sleep(pause)
			}
			if _, err := w.Write(c); err != nil {
				return
			}
		}
	}()
	return r
}

// readers are the two ways to read a packet within limits: each test
// runs on both.
var readers = []struct {
	name string
	read func(net.Conn, Limits) (*Message, error)
}{
	{"ReadPacketWithin", ReadPacketWithin},
	{"PacketReader", func(c net.Conn, l Limits) (*Message, error) { return NewPacketReader(c).Read(l) }},
}

func TestReadPacketWithinRefuses(t *testing.T) {
	for _, rd := range readers {
		t.Run(rd.name, func(t *testing.T) { testRefuses(t, rd.read) })
	}
}

func TestReadPacketWithinLargest(t *testing.T) {
	for _, rd := range readers {
		t.Run(rd.name, func(t *testing.T) { testLargest(t, rd.read) })
	}
}

func TestReadPacketWithinTimeouts(t *testing.T) {
	for _, rd := range readers {
		t.Run(rd.name, func(t *testing.T) { testTimeouts(t, rd.read) })
	}
}

// Packets that arrive together are read one by one from the buffer; a
// deadline set for one packet never cuts a later one short.
func TestPacketReaderSequence(t *testing.T) {
	short := 100 * time.Millisecond
	c := pipe(t, 3*short,
		[]byte{0, 0, 0, 2, 'D', 'x', 0, 0, 0, 1, 'Q', 0, 0}, // two packets and the start of a third
		[]byte{0, 3, 'B', 'y', 'z'},
		[]byte{0, 0, 0, 1, 'E'})
	p := NewPacketReader(c)
	lim := Limits{Idle: time.Second, Packet: 5 * short}
	for i, want := range []Message{{'D', []byte("x")}, {'Q', []byte{}}, {'B', []byte("yz")}, {'E', []byte{}}} {
		msg, err := p.Read(lim)
		if err != nil || msg.Code != want.Code || !bytes.Equal(msg.Data, want.Data) {
			t.Fatalf("packet %d: got %+v, %v; want %+v", i, msg, err, want)
		}
	}
	// A packet started in the buffer still completes within the packet
	// limit.
	slow := NewPacketReader(pipe(t, 3*short, []byte{0, 0, 0, 1, 'Q', 0, 0}, []byte{0, 1, 'Q'}))
	if _, err := slow.Read(lim); err != nil {
		t.Fatal(err)
	}
	if _, err := slow.Read(Limits{Idle: time.Second, Packet: short}); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a packet whose rest came after the packet limit: err %v, want a deadline", err)
	}
}

func testRefuses(t *testing.T, read func(net.Conn, Limits) (*Message, error)) {
	lim := Limits{Idle: time.Second, Packet: time.Second, MaxSize: 1 << 20}
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"zero length", []byte{0, 0, 0, 0}, ErrEmptyPacket},
		{"one byte over the limit", []byte{0, 0x10, 0, 1, 'B'}, ErrPacketTooBig},
		{"the old 512 MB maximum", []byte{0x20, 0, 0, 0, 'B'}, ErrPacketTooBig},
		{"all ones", []byte{0xff, 0xff, 0xff, 0xff, 'B'}, ErrPacketTooBig},
		{"prefix cut short", []byte{0, 0}, io.ErrUnexpectedEOF},
		{"data cut short", []byte{0, 0, 0, 9, 'B', 'x'}, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w := net.Pipe()
			defer r.Close()
			go func() { w.Write(tc.in); w.Close() }()
			msg, err := read(r, lim)
			if !errors.Is(err, tc.want) {
				t.Errorf("got %+v, %v; want error %v", msg, err, tc.want)
			}
		})
	}
}

func testLargest(t *testing.T, read func(net.Conn, Limits) (*Message, error)) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	data[0] = 'B'
	msg, err := read(pipe(t, 0, []byte{0, 0x10, 0, 0}, data), Limits{MaxSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if msg.Code != 'B' || !bytes.Equal(msg.Data, data[1:]) {
		t.Errorf("got code %c and %d bytes, want B and %d", msg.Code, len(msg.Data), len(data)-1)
	}
}

func testTimeouts(t *testing.T, read func(net.Conn, Limits) (*Message, error)) {
	short := 100 * time.Millisecond
	t.Run("idle", func(t *testing.T) {
		_, err := read(pipe(t, 0), Limits{Idle: short, Packet: time.Hour})
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("err %v, want a deadline", err)
		}
	})
	t.Run("slow packet", func(t *testing.T) {
		_, err := read(pipe(t, time.Second, []byte{0}, []byte{0, 0, 1, 'Q'}), Limits{Idle: time.Hour, Packet: short})
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("err %v, want a deadline", err)
		}
	})
	t.Run("idle longer than the packet limit", func(t *testing.T) {
		msg, err := read(pipe(t, 3*short, nil, []byte{0, 0, 0, 1, 'Q'}), Limits{Idle: time.Hour, Packet: short})
		if err != nil || msg.Code != 'Q' {
			t.Errorf("got %+v, %v", msg, err)
		}
	})
}
