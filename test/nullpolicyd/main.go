// Command nullpolicyd is the floor for loadpolicy: it answers every policy
// request "action=DUNNO" and every socketmap request "NOTFOUND " without
// parsing or deciding anything.
package main

import (
	"bufio"
	"flag"
	"log"
	"net"
	"strconv"
)

func main() {
	policy := flag.String("policy", "127.0.0.1:10050", "policy listen address")
	smap := flag.String("socketmap", "127.0.0.1:10051", "socketmap listen address")
	flag.Parse()
	go serve(*policy, policyConn)
	serve(*smap, socketmapConn)
}

func serve(addr string, handle func(net.Conn)) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go handle(c)
	}
}

// policyConn answers at each empty line.
func policyConn(c net.Conn) {
	defer c.Close()
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	for {
		l, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		if len(l) == 1 {
			w.WriteString("action=DUNNO\n\n")
			if w.Flush() != nil {
				return
			}
		}
	}
}

// socketmapConn skips each netstring and answers NOTFOUND.
func socketmapConn(c net.Conn) {
	defer c.Close()
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	for {
		l, err := r.ReadSlice(':')
		if err != nil {
			return
		}
		n, err := strconv.Atoi(string(l[:len(l)-1]))
		if err != nil {
			return
		}
		if _, err := r.Discard(n + 1); err != nil {
			return
		}
		w.WriteString("9:NOTFOUND ,")
		if w.Flush() != nil {
			return
		}
	}
}
