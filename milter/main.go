// Command mxdetour-milter is the companion milter of mxdetour: it
// DKIM-signs what your users send, refuses recipients in reserved
// domains, and refuses clients from blocked countries.
//
//	mxdetour-milter [-config FILE]              run the milter
//	mxdetour-milter keygen -domain D -selector S [-algorithm rsa|ed25519] [-bits N] [-dir DIR] [-owner USER]
//	mxdetour-milter keygen -next -domain D [-config FILE] [-owner USER]
//	mxdetour-milter keygen -all [-domains FILE] [-dir DIR] [-config FILE]
//	mxdetour-milter doctor [-config FILE] [-json]
//	mxdetour-milter import-opendkim /etc/opendkim.conf
//	mxdetour-milter explain -from ADDR [-auth USER] [-client IP|local] [-to ADDR]
//	mxdetour-milter -check-config [-config FILE] | -version
//
// Under systemd it takes its socket by FileDescriptorName= "milter"
// (contrib/systemd); see internal/daemon.
//
// This file parses the flags and wires the parts: the daemon is assembled
// in milter/server, the commands (keygen, doctor, explain,
// import-opendkim) live in milter/admin.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/internal/logging"
	"github.com/mxdetour/mxdetour/milter/admin"
	"github.com/mxdetour/mxdetour/milter/server"
)

var version = "dev"

// Exit codes: 78 (EX_CONFIG) means the usage or the configuration is
// wrong, and systemd does not restart (RestartPreventExitStatus=78); 1
// any other failure.
const (
	exitFailure = daemon.ExitFailure
	exitConfig  = daemon.ExitConfig
)

const usage = `usage:
  mxdetour-milter [-config FILE]                  run the milter
  mxdetour-milter -check-config [-config FILE]    validate the configuration, keys and country data, and exit
  mxdetour-milter -version
  mxdetour-milter keygen -domain D -selector S [-algorithm rsa|ed25519] [-bits N] [-dir DIR] [-owner USER]
  mxdetour-milter keygen -next -domain D [-config FILE] [-owner USER]   the next key of a rotation
  mxdetour-milter keygen -all [-domains FILE] [-dir DIR]   keys for every domain of Postfix without one
  mxdetour-milter doctor [-config FILE] [-json]   check DNS: keys, SPF, DMARC, reverse DNS (exit 0/1/2)
  mxdetour-milter import-opendkim FILE            print mxdetour.toml sections for an opendkim.conf
  mxdetour-milter explain -from ADDR [-auth USER] [-client IP|local] [-to ADDR] [-config FILE]
                                                  what the milter would do with such a message, and why
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "keygen":
			return admin.Keygen(args[1:], stdout, stderr)
		case "doctor":
			return admin.Doctor(args[1:], stdout, stderr)
		case "import-opendkim":
			return admin.ImportOpenDKIM(args[1:], stdout, stderr)
		case "explain":
			return admin.Explain(args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("mxdetour-milter", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage, "\nflags:\n"); fs.PrintDefaults() }
	cfgPath := fs.String("config", "", "configuration file (default "+config.DefaultPath+" if it exists, else built-in defaults)")
	checkOnly := fs.Bool("check-config", false, "validate the configuration, keys and country data, and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if code, ok := daemon.ParseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mxdetour-milter: unknown argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitConfig
	}
	if *showVersion {
		fmt.Fprintln(stdout, "mxdetour-milter", version)
		return 0
	}
	cfg, used, err := config.LoadDefault(*cfgPath)
	if err != nil { // a broken file (syntax, unknown key, bad value) is the admin's to fix: no start
		fmt.Fprintln(stderr, err)
		if !*checkOnly && daemon.Activated() { // but Postfix must not wait for the fix
			return server.FailOpen(*cfgPath, err, stderr)
		}
		return exitConfig
	}
	log, level, err := logging.New(logging.Options(cfg.Log))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	defer log.Sync() //nolint:errcheck
	if *checkOnly {
		st, err := server.Check(cfg, log)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", config.Source(used), err)
			return exitConfig
		}
		st.Geo.Close()
		st.Pickup.Close()
		// One line: systemctl reload runs this, and the journal and
		// mail.log take each line for an event of its own.
		rest := ""
		if os.Getenv("MXDETOUR_CHECKED_BY_POLICYD") == "" {
			rest = "; not checked here: learn patterns, state_file and [fleet] (mxdetour-policyd -check-config)"
		}
		fmt.Fprintf(stdout, "%s: OK (%d DKIM keys; checked: every key of the file; each DKIM key file loads as a private key; the country data opens%s)\n",
			config.Source(used), st.Keys.Len(), rest)
		return 0
	}
	d, err := server.New(*cfgPath, cfg, level, log, version)
	if err != nil {
		fmt.Fprintln(stderr, err)
		if daemon.Activated() {
			return server.FailOpen(*cfgPath, err, stderr)
		}
		return exitConfig
	}
	if err := d.Serve(); err != nil {
		log.Error("exiting", zap.Error(err))
		return exitFailure
	}
	return 0
}
