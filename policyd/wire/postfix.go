package wire

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	postfixcmd "github.com/mxdetour/mxdetour/internal/postfix"
)

// postfix runs Postfix's own commands against one instance: postconf(1)
// reads and edits main.cf and master.cf, postmap(1) builds and queries
// tables, postfix(1) checks and reloads.
type postfix struct {
	dir      string // -c DIR as given (absolute); "" = Postfix's default instance
	confDir  string // the instance's config_directory, where main.cf is
	postconf string
	postfix  string
	postmap  string
}

// command finds a Postfix command: the one given, else in PATH, else in
// /usr/sbin (where Debian and Red Hat put them, often not in a user's PATH).
func command(given, name string) (string, error) {
	if given != "" {
		return given, nil
	}
	p, err := postfixcmd.Command(name)
	if err != nil {
		return "", fmt.Errorf("%w: is Postfix installed?", err)
	}
	return p, nil
}

func newPostfix(ctx context.Context, o Options) (*postfix, error) {
	p := &postfix{}
	var err error
	if p.postconf, err = command(o.Postconf, "postconf"); err != nil {
		return nil, err
	}
	if p.postfix, err = command(o.Postfix, "postfix"); err != nil {
		return nil, err
	}
	if p.postmap, err = command(o.Postmap, "postmap"); err != nil {
		return nil, err
	}
	if o.ConfigDir != "" {
		if p.dir, err = filepath.Abs(o.ConfigDir); err != nil {
			return nil, err
		}
		if _, err := os.Stat(filepath.Join(p.dir, "main.cf")); err != nil {
			return nil, ConfigError{fmt.Errorf("-postfix-config %s: %w", o.ConfigDir, err)}
		}
		p.confDir = p.dir
		return p, nil
	}
	dir, err := p.conf(ctx, "-xh", "config_directory")
	if err != nil {
		return nil, err
	}
	p.confDir = strings.TrimSpace(dir)
	return p, nil
}

// withDir puts -c DIR before args when an instance was named.
func (p *postfix) withDir(args []string) []string {
	if p.dir == "" {
		return args
	}
	return append([]string{"-c", p.dir}, args...)
}

// run runs name with args and returns its standard output; a failure
// carries the command line and what it wrote to standard error.
func (p *postfix) run(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, p.withDir(args)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %w: %s", commandLine(cmd), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// conf runs postconf.
func (p *postfix) conf(ctx context.Context, args ...string) (string, error) {
	return p.run(ctx, p.postconf, args...)
}

// combined runs a command and returns everything it printed.
func (p *postfix) combined(ctx context.Context, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, p.withDir(args)...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("no answer within %s", timeout)
	}
	return string(out), err
}

func commandLine(cmd *exec.Cmd) string {
	return filepath.Base(cmd.Path) + " " + strings.Join(cmd.Args[1:], " ")
}

// pairs parses postconf's "key = value" lines (-n, -F, -P); an empty
// value is printed as "key =".
func pairs(out string) ([][2]string, error) {
	var kv [][2]string
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		k, v, ok := strings.Cut(line, " =")
		if !ok {
			return nil, fmt.Errorf("postconf printed %q, not \"name = value\"", line)
		}
		kv = append(kv, [2]string{k, strings.TrimPrefix(v, " ")})
	}
	return kv, nil
}

// service is one master.cf entry as postconf -F and -P show it.
type service struct {
	name, typ string
	fields    map[string]string // private, unprivileged, chroot, wakeup, process_limit, command
	opts      map[string]string // -o name=value
	optOrder  []string
}

func (s *service) key() string { return s.name + "/" + s.typ }

// program is the command's first word: smtpd, smtp, trivial-rewrite ...
func (s *service) program() string {
	f := strings.Fields(s.fields["command"])
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// entry is a master.cf line for a service of this one's kind (the fields
// private to process_limit copied), running program with opts.
func (s *service) entry(name, program string, opts [][2]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", name, s.typ)
	for _, f := range []string{"private", "unprivileged", "chroot", "wakeup", "process_limit"} {
		b.WriteString(" " + s.fields[f])
	}
	b.WriteString(" " + program)
	for _, o := range opts {
		if strings.ContainsAny(o[1], " \t") {
			// master(5): a value with spaces goes in braces (Postfix 3.0+).
			b.WriteString(" -o { " + o[0] + " = " + o[1] + " }")
		} else {
			b.WriteString(" -o " + o[0] + "=" + o[1])
		}
	}
	return b.String()
}

// state is the instance's configuration as postconf reads it.
type state struct {
	set      map[string]string // what main.cf sets (postconf -n), unexpanded
	values   map[string]string // the parameters of readParams, defaults included
	expanded map[string]string // ... and with $name resolved (postconf -x)
	services []*service        // master.cf, in file order
	queueDir string
}

// readParams are the parameters wire looks at, read in one postconf run.
var readParams = []string{
	"queue_directory", "default_transport", "rewrite_service_name", "transport_maps",
	"smtpd_milters", "non_smtpd_milters", "milter_default_action",
	"smtpd_recipient_restrictions", "smtpd_end_of_data_restrictions",
}

func (p *postfix) read(ctx context.Context) (*state, error) {
	st := &state{set: map[string]string{}}
	out, err := p.conf(ctx, "-n")
	if err != nil {
		return nil, err
	}
	kv, err := pairs(out)
	if err != nil {
		return nil, err
	}
	for _, e := range kv {
		st.set[e[0]] = e[1]
	}
	// With -c, postconf -n shows config_directory although main.cf
	// does not set it.
	delete(st.set, "config_directory")
	if st.values, err = p.params(ctx, false, readParams); err != nil {
		return nil, err
	}
	if st.expanded, err = p.params(ctx, true, readParams); err != nil {
		return nil, err
	}
	st.queueDir = st.expanded["queue_directory"]
	if out, err = p.conf(ctx, "-F"); err != nil {
		return nil, err
	}
	if kv, err = pairs(out); err != nil {
		return nil, err
	}
	byKey := map[string]*service{}
	for _, e := range kv {
		parts := strings.SplitN(e[0], "/", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("postconf -F printed %q", e[0])
		}
		k := parts[0] + "/" + parts[1]
		s := byKey[k]
		if s == nil || parts[2] == "service" && s.fields["service"] != "" {
			if s != nil {
				return nil, ConfigError{fmt.Errorf("master.cf has two entries for service %s (Postfix uses the last one): remove one, then run this again", k)}
			}
			s = &service{name: parts[0], typ: parts[1], fields: map[string]string{}, opts: map[string]string{}}
			byKey[k] = s
			st.services = append(st.services, s)
		}
		s.fields[parts[2]] = e[1]
	}
	if out, err = p.conf(ctx, "-P"); err != nil {
		return nil, err
	}
	if kv, err = pairs(out); err != nil {
		return nil, err
	}
	for _, e := range kv {
		parts := strings.SplitN(e[0], "/", 3)
		if len(parts) != 3 || byKey[parts[0]+"/"+parts[1]] == nil {
			return nil, fmt.Errorf("postconf -P printed %q", e[0])
		}
		s := byKey[parts[0]+"/"+parts[1]]
		s.opts[parts[2]] = e[1]
		s.optOrder = append(s.optOrder, parts[2])
	}
	return st, nil
}

// params are parameters' values, defaults included; expanded resolves
// $name references as Postfix does (postconf -x).
func (p *postfix) params(ctx context.Context, expanded bool, names []string) (map[string]string, error) {
	flag := "-h"
	if expanded {
		flag = "-xh"
	}
	out, err := p.conf(ctx, append([]string{flag}, names...)...)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(names) {
		return nil, fmt.Errorf("postconf %s printed %d lines for %d parameters", flag, len(lines), len(names))
	}
	m := map[string]string{}
	for i, n := range names {
		m[n] = lines[i]
	}
	return m, nil
}

func (st *state) service(key string) *service {
	for _, s := range st.services {
		if s.key() == key {
			return s
		}
	}
	return nil
}

// running reports whether the instance's master process runs.
func (p *postfix) running(ctx context.Context) bool {
	_, err := p.run(ctx, p.postfix, "status")
	return err == nil
}

// hashFile is the SHA-256 of a file's bytes, hex; "" when it cannot be read.
func hashFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return sha(b)
}
