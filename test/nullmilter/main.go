// Command nullmilter is the floor for loadmilter: a milter on go-milter's
// low-level API, like mxdetour-milter, that accepts everything and signs
// nothing.
package main

import (
	"flag"
	"log"
	"net"
	"os"
	"strings"

	"github.com/d--j/go-milter"
)

type accept struct{ milter.NoOpMilter }

func main() {
	addr := flag.String("listen", "127.0.0.1:10043", "listen address (host:port or unix:/path)")
	flag.Parse()
	network, address := "tcp", *addr
	if p, ok := strings.CutPrefix(*addr, "unix:"); ok {
		network, address = "unix", p
		_ = os.Remove(p)
	}
	ln, err := net.Listen(network, address)
	if err != nil {
		log.Fatal(err)
	}
	if network == "unix" {
		// Postfix's processes (user postfix) connect to it.
		if err := os.Chmod(address, 0o666); err != nil {
			log.Fatal(err)
		}
	}
	srv := milter.NewServer(
		milter.WithMilter(func() milter.Milter { return accept{} }),
		milter.WithActions(milter.OptAddHeader|milter.OptChangeHeader),
		milter.WithProtocols(milter.OptHeaderLeadingSpace|milter.OptNoUnknown|milter.OptNoHelo),
	)
	log.Fatal(srv.Serve(ln))
}
