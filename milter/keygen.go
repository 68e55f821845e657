package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mxdetour/mxdetour/internal/domain"
	"github.com/mxdetour/mxdetour/milter/dkim"
)

// keygen writes a new private key (mode 0600) to DIR/DOMAIN.SELECTOR.key
// and prints the DNS TXT record to publish and the config rows to add.
func keygen(args []string) int {
	fs := flag.NewFlagSet("mxdetour-milter keygen", flag.ContinueOnError)
	dom := fs.String("domain", "", "signing domain (d=)")
	sel := fs.String("selector", "", "selector (s=)")
	alg := fs.String("algorithm", "rsa", "rsa or ed25519")
	bits := fs.Int("bits", 2048, "RSA key size")
	dir := fs.String("dir", ".", "directory for the key file")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	d, err := domain.Normalize(*dom)
	if err != nil || *sel == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: mxdetour-milter keygen -domain D -selector S [-algorithm rsa|ed25519] [-bits N] [-dir DIR]")
		return exitConfig
	}
	k, err := dkim.GenerateKey(*alg, *bits)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitConfig
	}
	path := filepath.Join(*dir, d+"."+*sel+".key")
	if err := dkim.WriteKeyFile(path, k); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitFailure
	}
	abs, _ := filepath.Abs(path)
	fmt.Printf("; private key written to %s (mode 0600)\n; publish this record:\n%s\n", abs, dkim.ZoneLine(*sel, d, k.Public()))
	fmt.Printf("; and add to mxdetour.toml:\n; [[milter.dkim.keys]]\n; domain = %q\n; selector = %q\n; key_file = %q\n", d, *sel, abs)
	return 0
}
