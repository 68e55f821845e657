// Command nullmilter is the floor for loadmilter: a milter on go-milter's
// low-level API, like mxdetour-milter, that accepts everything and signs
// nothing. With -like-mxdetour it negotiates what mxdetour-milter
// negotiates (milter/filter: the no-reply options and SMFIR_SKIP when the
// MTA offers them, the same macros), so that the MTA sends it the same
// packets and waits for the same replies: the floor for
// test/bench-postfix.sh.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strings"

	"github.com/d--j/go-milter"
)

type accept struct{ milter.NoOpMilter }

// What milter/filter asks for (requiredProtocol, wantedProtocol and the
// macro requests of Filter.ServerOptions); kept in step by hand.
const (
	required = milter.OptHeaderLeadingSpace | milter.OptNoUnknown | milter.OptNoHelo
	wanted   = milter.OptNoData | milter.OptNoConnReply | milter.OptNoHeaderReply |
		milter.OptNoEOHReply | milter.OptSkip
)

func likeMxdetour(mtaVersion, _ uint32, mtaActions, actions milter.OptAction, mtaProtocol, _ milter.OptProtocol, offered milter.DataSize) (uint32, milter.OptAction, milter.OptProtocol, milter.DataSize, error) {
	if actions&mtaActions != actions || required&mtaProtocol != required {
		return 0, 0, 0, 0, fmt.Errorf("MTA offers actions %q, protocol %q", mtaActions, mtaProtocol)
	}
	return mtaVersion, actions, required | wanted&mtaProtocol, offered, nil
}

func main() {
	addr := flag.String("listen", "127.0.0.1:10043", "listen address (host:port or unix:/path)")
	like := flag.Bool("like-mxdetour", false, "negotiate the protocol options and macros mxdetour-milter does")
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
	opts := []milter.Option{
		milter.WithMilter(func() milter.Milter { return accept{} }),
		milter.WithActions(milter.OptAddHeader | milter.OptChangeHeader),
		milter.WithProtocols(required),
	}
	if *like {
		opts = append(opts,
			milter.WithActions(milter.OptAddHeader|milter.OptChangeHeader|milter.OptQuarantine),
			milter.WithProtocols(required|wanted),
			milter.WithNegotiationCallback(likeMxdetour),
			milter.WithMacroRequest(milter.StageConnect, []milter.MacroName{milter.MacroDaemonName, milter.MacroDaemonAddr, milter.MacroMTAFQDN}),
			milter.WithMacroRequest(milter.StageMail, []milter.MacroName{milter.MacroAuthAuthen, milter.MacroAuthType, milter.MacroQueueId}),
			milter.WithMacroRequest(milter.StageRcpt, []milter.MacroName{milter.MacroRcptAddr, milter.MacroRcptMailer}),
			milter.WithMacroRequest(milter.StageEOM, []milter.MacroName{milter.MacroQueueId}),
		)
	}
	srv := milter.NewServer(opts...)
	log.Fatal(srv.Serve(ln))
}
