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

func TestReadPacketWithinRefuses(t *testing.T) {
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
			msg, err := ReadPacketWithin(r, lim)
			if !errors.Is(err, tc.want) {
				t.Errorf("got %+v, %v; want error %v", msg, err, tc.want)
			}
		})
	}
}

func TestReadPacketWithinLargest(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	data[0] = 'B'
	msg, err := ReadPacketWithin(pipe(t, 0, []byte{0, 0x10, 0, 0}, data), Limits{MaxSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if msg.Code != 'B' || !bytes.Equal(msg.Data, data[1:]) {
		t.Errorf("got code %c and %d bytes, want B and %d", msg.Code, len(msg.Data), len(data)-1)
	}
}

func TestReadPacketWithinTimeouts(t *testing.T) {
	short := 100 * time.Millisecond
	t.Run("idle", func(t *testing.T) {
		_, err := ReadPacketWithin(pipe(t, 0), Limits{Idle: short, Packet: time.Hour})
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("err %v, want a deadline", err)
		}
	})
	t.Run("slow packet", func(t *testing.T) {
		_, err := ReadPacketWithin(pipe(t, time.Second, []byte{0}, []byte{0, 0, 1, 'Q'}), Limits{Idle: time.Hour, Packet: short})
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("err %v, want a deadline", err)
		}
	})
	t.Run("idle longer than the packet limit", func(t *testing.T) {
		msg, err := ReadPacketWithin(pipe(t, 3*short, nil, []byte{0, 0, 0, 1, 'Q'}), Limits{Idle: time.Hour, Packet: short})
		if err != nil || msg.Code != 'Q' {
			t.Errorf("got %+v, %v", msg, err)
		}
	})
}
