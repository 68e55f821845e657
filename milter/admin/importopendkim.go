package admin

import (
	"flag"
	"fmt"
	"io"

	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/milter/opendkim"
)

const importUsage = "usage: mxdetour-milter import-opendkim FILE\n" +
	"  reads OpenDKIM's configuration (e.g. /etc/opendkim.conf) with its KeyTable, SigningTable,\n" +
	"  InternalHosts and ExternalIgnoreList, and prints the equivalent mxdetour.toml sections;\n" +
	"  options it cannot carry over are named with their line\n"

// importOpenDKIM prints the mxdetour.toml sections equivalent to an
// OpenDKIM configuration.
func ImportOpenDKIM(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mxdetour-milter import-opendkim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, importUsage) }
	if code, ok := daemon.ParseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		if fs.NArg() > 1 {
			fmt.Fprintf(stderr, "mxdetour-milter import-opendkim: unknown argument %q\n", fs.Arg(1))
		}
		fs.Usage()
		return exitConfig
	}
	r, err := opendkim.Import(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "mxdetour-milter import-opendkim:", err)
		return exitConfig
	}
	r.WriteTOML(stdout)
	return 0
}
