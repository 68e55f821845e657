package socketmap

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

func TestNetstring(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{"26:transport alice@gmail.test,", "transport alice@gmail.test", false},
		{"0:,", "", false},
		{"3:abc", "", true},
		{"3:abcd", "", true},
		{"x:abc,", "", true},
		{":abc,", "", true},
		{"99999999999:a,", "", true},
		{"5:ab", "", true},
	} {
		got, err := ReadNetstring(bufio.NewReader(strings.NewReader(tc.in)), 1000, nil)
		if (err != nil) != tc.err || string(got) != tc.want {
			t.Errorf("%q: got %q, %v", tc.in, got, err)
		}
	}
	if _, err := ReadNetstring(bufio.NewReader(strings.NewReader("")), 10, nil); err != io.EOF {
		t.Errorf("clean close: %v", err)
	}
	for r, want := range map[Reply]string{
		OK("relay:[mx03]:587"):          "19:OK relay:[mx03]:587,",
		NotFound():                      "9:NOTFOUND ,",
		Temp("dns"):                     "8:TEMP dns,",
		OK(""):                          "9:NOTFOUND ,",
		OK(strings.Repeat("x", 200000)): fmt.Sprintf("%d:OK %s,", MaxReply, strings.Repeat("x", MaxReply-3)),
	} {
		if got := string(AppendNetstring(nil, r)); got != want {
			t.Errorf("%v: %.40q, want %.40q", r.Status, got, want)
		}
	}
	if _, _, err := SplitRequest([]byte("transport")); err == nil {
		t.Error("request without key accepted")
	}
	if n, k, _ := SplitRequest([]byte(`transport "a b"@c`)); n != "transport" || k != `"a b"@c` {
		t.Errorf("split: %q %q", n, k)
	}
}

type lookupFunc func(name, key string) Reply

func (f lookupFunc) Lookup(_ context.Context, name, key string) Reply { return f(name, key) }

func TestServer(t *testing.T) {
	s := NewServer(lookupFunc(func(_, key string) Reply {
		switch key {
		case "panic@x":
			panic("boom")
		case "*":
			return NotFound()
		}
		return OK("relay:[" + key + "]")
	}), Options{MaxRequestSize: 512}, zaptest.NewLogger(t))
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(ln)
	defer s.Shutdown(context.Background())
	addr := ln.Addr().String()

	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			r := bufio.NewReader(c)
			for j := range 20 {
				key := fmt.Sprintf("u%d-%d@x", i, j)
				req := "transport " + key
				fmt.Fprintf(c, "%d:%s,", len(req), req)
				got, err := ReadNetstring(r, 1000, nil)
				if want := "OK relay:[" + key + "]"; err != nil || string(got) != want {
					t.Errorf("got %q %v, want %q", got, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()

	c, _ := net.Dial("tcp", addr)
	r := bufio.NewReader(c)
	for req, want := range map[string]string{"transport *": "NOTFOUND ", "transport panic@x": "NOTFOUND "} {
		fmt.Fprintf(c, "%d:%s,", len(req), req)
		if got, err := ReadNetstring(r, 1000, nil); err != nil || string(got) != want {
			t.Errorf("%s: %q %v, want %q", req, got, err, want)
		}
	}
	c.Close()
	for _, bad := range []string{"abc", "10:short", "2000:" + strings.Repeat("x", 2000) + ",", "4:nokey,"} {
		c, _ := net.Dial("tcp", addr)
		fmt.Fprint(c, bad)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if strings.HasPrefix(bad, "10:") {
			c.(*net.TCPConn).CloseWrite() // early close mid-netstring
		}
		if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
			t.Errorf("%.10q: reply %q %v, want closed without one", bad, b, err)
		}
		c.Close()
	}
}

func FuzzReadNetstring(f *testing.F) {
	f.Add([]byte("26:transport alice@gmail.test,"))
	f.Add([]byte("0:,3:a b,"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReader(strings.NewReader(string(b)))
		for range 4 {
			p, err := ReadNetstring(r, 100, nil)
			if err != nil {
				return
			}
			if len(p) > 100 {
				t.Fatalf("payload of %d bytes over the limit", len(p))
			}
		}
	})
}
