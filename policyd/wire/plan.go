package wire

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
)

// The parameters and services wire writes, as contrib/postfix has them.
const (
	rewriteSMTPD = "rewrite-smtpd"
	limitsParam  = "mxdetour_limits"
	limitsRef    = "$" + limitsParam
)

// The milter settings of contrib/postfix/main.cf set where main.cf leaves
// them out: a hung milter would otherwise stall each SMTP session 30 s.
var milterDefaults = [][2]string{
	{"milter_protocol", "6"},
	{"milter_connect_timeout", "5s"},
	{"milter_command_timeout", "5s"},
	{"milter_content_timeout", "30s"},
}

// planner works out the changes that bring one instance to what Want asks
// for; it changes nothing itself.
type planner struct {
	ctx  context.Context
	p    *postfix
	st   *state
	w    Want
	prev *record // what earlier runs of wire did, or nil

	changes []*change
	notes   []string
}

// plan returns the changes wire must make, in the order to make them.
func plan(ctx context.Context, p *postfix, st *state, w Want, prev *record) ([]*change, []string, error) {
	pl := &planner{ctx: ctx, p: p, st: st, w: w, prev: prev}
	steps := []func() error{pl.routing, pl.transports, pl.milter, pl.limits, pl.headerChecks}
	var errs []error
	for _, step := range steps {
		if err := step(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	return pl.changes, pl.notes, nil
}

func (pl *planner) note(format string, a ...any) {
	pl.notes = append(pl.notes, fmt.Sprintf(format, a...))
}

// current is a parameter's value (its default when main.cf leaves it
// out) and whether main.cf sets it.
func (pl *planner) current(name string) (string, bool, error) {
	if v, ok := pl.st.set[name]; ok {
		return v, true, nil
	}
	if v, ok := pl.st.values[name]; ok || name == limitsParam {
		return v, false, nil
	}
	m, err := pl.p.params(pl.ctx, false, []string{name})
	return m[name], false, err
}

// setParam plans name = value unless it already is.
func (pl *planner) setParam(name, value, why string) error {
	cur, set, err := pl.current(name)
	if err != nil {
		return err
	}
	if set && cur == value {
		return nil
	}
	c := &change{Kind: kindParam, Name: name, After: value, Why: why}
	if set {
		c.Before = &cur
	}
	pl.changes = append(pl.changes, c)
	return nil
}

// addToList plans entry into list parameter name: after the
// administrator's entries, or first. Entries earlier runs added and this
// one no longer wants (an address changed in the TOML) are dropped.
func (pl *planner) addToList(name, entry string, first bool) error {
	cur, set, err := pl.current(name)
	if err != nil {
		return err
	}
	next := withEntry(cur, entry, pl.prev.added(kindParam, name), first, ", ")
	if next == cur {
		return nil
	}
	c := &change{Kind: kindParam, Name: name, After: next, Added: []string{entry}}
	if set {
		c.Before = &cur
	}
	pl.changes = append(pl.changes, c)
	return nil
}

// setOption plans -o name=value on service s (its value left alone when
// onlyIfMissing and the service already sets one).
func (pl *planner) setOption(s *service, name, value string, onlyIfMissing bool, added []string) {
	cur, set := s.opts[name]
	if set && (cur == value || onlyIfMissing) {
		return
	}
	c := &change{Kind: kindOption, Name: s.key() + "/" + name, After: value, Added: added}
	if set {
		c.Before = &cur
	}
	pl.changes = append(pl.changes, c)
}

// addService plans a new master.cf entry.
func (pl *planner) addService(name, typ, entry, why string) {
	pl.changes = append(pl.changes, &change{Kind: kindService, Name: name + "/" + typ, After: entry, Why: why})
}

// routing wires the socketmap as the queue manager's transport_maps, and
// gives smtpd a trivial-rewrite without it (contrib/postfix, "wiring A").
func (pl *planner) routing() error {
	if pl.w.Socketmap == "" {
		return nil
	}
	addr, err := pl.address("policyd.socketmap_listen", pl.w.Socketmap, "trivial-rewrite")
	if err != nil {
		return err
	}
	ours := "socketmap:" + addr + ":transport"
	cur, _, err := pl.current("transport_maps")
	if err != nil {
		return err
	}
	// The administrator's own tables: everything but mxdetour's socketmap.
	mine := slices.Concat(pl.prev.added(kindParam, "transport_maps"), pl.sameSocketmaps(pl.w.Socketmap), []string{ours})
	theirs, _ := withoutEntries(cur, mine, ",")
	if err := pl.addToList("transport_maps", ours, false); err != nil {
		return err
	}
	if pl.w.Relay != "" {
		// The delivery status filter (learn.StatusFilter): a permanent
		// refusal of our address is deferred, not bounced, and leaves by
		// the route around it. Without a relay there is no such route.
		if err := pl.addToList("smtp_delivery_status_filter", "socketmap:"+addr+":status", false); err != nil {
			return err
		}
	}
	for _, t := range splitList(pl.st.expanded["transport_maps"]) {
		if !slices.Contains(mine, t) {
			if err := pl.table(t, "transport_maps", transportComment, 0o644); err != nil {
				return err
			}
		}
	}
	return pl.rewriteService(joinList(splitList(theirs), ","))
}

// sameSocketmaps are the ways of writing mxdetour's socketmap that mean
// the same socket: a unix path relative to the queue directory or not.
func (pl *planner) sameSocketmaps(listen string) []string {
	path, ok := strings.CutPrefix(listen, "unix:")
	if !ok {
		return nil
	}
	out := []string{"socketmap:unix:" + path + ":transport"}
	if rel, ok := pl.inQueue(path); ok {
		out = append(out, "socketmap:unix:"+rel+":transport")
	}
	return out
}

// rewriteService adds the rewrite-smtpd service (a copy of the rewrite
// service with transport_maps = the administrator's tables only) and
// points every smtpd at it.
func (pl *planner) rewriteService(theirTables string) error {
	name := pl.st.expanded["rewrite_service_name"]
	rewrite := pl.st.service(name + "/unix")
	if rewrite == nil {
		return ConfigError{fmt.Errorf("master.cf has no %s/unix service (trivial-rewrite) to copy for %s", name, rewriteSMTPD)}
	}
	if s := pl.st.service(rewriteSMTPD + "/unix"); s != nil {
		if s.program() != "trivial-rewrite" {
			return ConfigError{fmt.Errorf("master.cf's %s/unix runs %q, not trivial-rewrite: rename it, then run this again", rewriteSMTPD, s.program())}
		}
		pl.setOption(s, "transport_maps", theirTables, false, nil)
	} else {
		var opts [][2]string
		for _, o := range rewrite.optOrder {
			if o != "transport_maps" {
				opts = append(opts, [2]string{o, rewrite.opts[o]})
			}
		}
		opts = append(opts, [2]string{"transport_maps", theirTables})
		pl.addService(rewriteSMTPD, "unix", rewrite.entry(rewriteSMTPD, "trivial-rewrite", opts),
			"smtpd's address resolver, without mxdetour's socketmap")
	}
	for _, s := range pl.st.services {
		if s.program() == "smtpd" {
			pl.setOption(s, "rewrite_service_name", rewriteSMTPD, false, nil)
		}
	}
	return nil
}

// transports makes sure the services [transports] names exist with the
// options contrib/postfix/master.cf gives them.
func (pl *planner) transports() error {
	defTransport := pl.st.expanded["default_transport"]
	sasl := filepath.Join(pl.p.confDir, "sasl_passwd")
	relayOpts := [][2]string{
		{"syslog_name", "postfix/$service_name"},
		{"smtp_tls_security_level", "encrypt"},
		{"smtp_sasl_auth_enable", "yes"},
		{"smtp_sasl_security_options", "noanonymous"},
		{"smtp_sasl_tls_security_options", "noanonymous"},
	}
	if pl.w.Socketmap != "" {
		// The relay's own refusals say nothing of our direct address:
		// they reach the sender unchanged (main.cf's filter is for smtp).
		relayOpts = append(relayOpts, [2]string{"smtp_delivery_status_filter", ""})
	}
	// main.cf's own password table, where it names one, serves the relay
	// too: an option of ours would hide the administrator's credentials.
	saslMaps, saslSet := pl.st.set["smtp_sasl_password_maps"]
	if !saslSet {
		relayOpts = append(relayOpts, [2]string{"smtp_sasl_password_maps", "hash:" + sasl})
	}
	ipv4Opts := [][2]string{{"syslog_name", "postfix/$service_name"}, {"inet_protocols", "ipv4"}}
	var errs []error
	seen := map[string]string{}
	for _, t := range []struct {
		key, value string
		opts       [][2]string
		required   string // the option that must have our value
	}{
		{"transports.relay", pl.w.Relay, relayOpts, ""},
		{"transports.ipv4", pl.w.IPv4, ipv4Opts, "inet_protocols"},
	} {
		if t.value == "" {
			continue
		}
		name, nexthop, _ := strings.Cut(t.value, ":")
		if other, ok := seen[name]; ok {
			errs = append(errs, ConfigError{fmt.Errorf("%s and %s name the same Postfix service %q: give each its own", other, t.key, name)})
			continue
		}
		seen[name] = t.key
		if name == defTransport || name == "smtp" || name == "" {
			errs = append(errs, ConfigError{fmt.Errorf("%s = %q: %q is Postfix's default delivery service; name a service of its own (e.g. relay:%s), which wire creates", t.key, t.value, name, nexthop)})
			continue
		}
		s := pl.st.service(name + "/unix")
		if s == nil {
			smtp := pl.st.service("smtp/unix")
			if smtp == nil {
				errs = append(errs, ConfigError{fmt.Errorf("master.cf has no smtp/unix service to copy for %s", name)})
				continue
			}
			pl.addService(name, "unix", smtp.entry(name, "smtp", t.opts), "the "+t.key+" transport")
		} else {
			if s.program() != "smtp" {
				errs = append(errs, ConfigError{fmt.Errorf("%s = %q: master.cf's %s/unix runs %q, not smtp", t.key, t.value, name, s.program())})
				continue
			}
			for _, o := range t.opts {
				pl.setOption(s, o[0], o[1], o[0] != t.required, nil)
			}
		}
		if t.key == "transports.relay" {
			maps := "hash:" + sasl
			if s != nil && s.opts["smtp_sasl_password_maps"] != "" {
				maps = s.opts["smtp_sasl_password_maps"]
			} else if saslSet {
				maps = saslMaps
			}
			maps, err := pl.expand(maps)
			if err != nil {
				return err
			}
			comment := fmt.Sprintf(saslComment, t.value, saslKey(nexthop))
			for _, m := range splitList(maps) {
				if err := pl.table(m, "the relay's smtp_sasl_password_maps", comment, 0o600); err != nil {
					return err
				}
			}
		}
	}
	return errors.Join(errs...)
}

// saslKey is the sasl_passwd key Postfix looks up for a nexthop: the
// nexthop as written ([host]:port).
func saslKey(nexthop string) string {
	if nexthop == "" {
		return "[relay.example.net]:587"
	}
	return nexthop
}

// expand resolves $name references in a value as Postfix would.
func (pl *planner) expand(v string) (string, error) {
	// postconf expands only parameters it knows: lend it one.
	return pl.expandParam("smtp_sasl_password_maps", v)
}

// milter adds mxdetour-milter to smtpd_milters and non_smtpd_milters,
// with milter_default_action = accept: mail goes on unsigned when it is
// down, never deferred.
func (pl *planner) milter() error {
	if pl.w.Milter == "" {
		return nil
	}
	addr, err := pl.address("milter.listen", pl.w.Milter, "smtpd", "cleanup")
	if err != nil {
		return err
	}
	for _, name := range []string{"smtpd_milters", "non_smtpd_milters"} {
		if err := pl.addToList(name, addr, false); err != nil {
			return err
		}
	}
	// Postfix's bounces (From MAILER-DAEMON@$myhostname) pass
	// non_smtpd_milters only when so classed: then they are signed, else
	// they fail DMARC where the receiver asks for it.
	if err := pl.addToList("internal_mail_filter_classes", "bounce", false); err != nil {
		return err
	}
	cur, set, err := pl.current("milter_default_action")
	if err != nil {
		return err
	}
	if cur != "accept" {
		why := "mail goes on unsigned when mxdetour-milter is down"
		if set {
			pl.note("milter_default_action was %q: set to accept, so that mail is never refused or deferred because mxdetour-milter is down", cur)
			why = "was " + cur + ": " + why
		}
		if err := pl.setParam("milter_default_action", "accept", why); err != nil {
			return err
		}
	}
	for _, d := range milterDefaults {
		if _, set := pl.st.set[d[0]]; !set {
			if err := pl.setParam(d[0], d[1], ""); err != nil {
				return err
			}
		}
	}
	return nil
}

// limits defines $mxdetour_limits and puts it first in the recipient and
// end-of-data restrictions of main.cf and of every service overriding them.
func (pl *planner) limits() error {
	if !pl.w.Limits {
		return nil
	}
	if pl.w.Policy == "" {
		return ConfigError{errors.New("[[limits]] need policyd.policy_listen: Postfix asks the limits through the policy service")}
	}
	addr, err := pl.address("policyd.policy_listen", pl.w.Policy, "smtpd")
	if err != nil {
		return err
	}
	def := "check_policy_service { " + addr + ", timeout=2s, try_limit=1, default_action=DUNNO, policy_context=limits }"
	if err := pl.setParam(limitsParam, def, "mxdetour's outbound limits; DUNNO when it does not answer in 2s"); err != nil {
		return err
	}
	rcpt, _, err := pl.current("smtpd_recipient_restrictions")
	if err != nil {
		return err
	}
	if strings.TrimSpace(rcpt) == "" {
		pl.note("smtpd_recipient_restrictions was empty: it now holds only %s. Relay protection stays in smtpd_relay_restrictions (Postfix 3.x's default: permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination)", limitsRef)
	}
	for _, name := range []string{"smtpd_recipient_restrictions", "smtpd_end_of_data_restrictions"} {
		if err := pl.addToList(name, limitsRef, true); err != nil {
			return err
		}
		for _, s := range pl.st.services {
			if v, ok := s.opts[name]; ok {
				next := withEntry(v, limitsRef, nil, true, ",")
				if next != v {
					pl.setOption(s, name, next, false, []string{limitsRef})
				}
			}
		}
	}
	return nil
}

// address is how Postfix names a socket mxdetour listens on: inet:host:port
// or unix:path, relative to the queue directory when inside it, as
// chrooted Postfix daemons (Debian's trivial-rewrite, smtpd, cleanup)
// need. A unix socket elsewhere is refused when a program that connects to
// it (users) runs chrooted.
func (pl *planner) address(key, listen string, users ...string) (string, error) {
	path, ok := strings.CutPrefix(listen, "unix:")
	if !ok {
		return inetAddress(key, listen)
	}
	if rel, ok := pl.inQueue(path); ok {
		return "unix:" + rel, nil
	}
	for _, s := range pl.st.services {
		if slices.Contains(users, s.program()) && s.fields["chroot"] == "y" {
			return "", ConfigError{fmt.Errorf("%s = %q is outside Postfix's queue directory %s, where master.cf's chrooted %s cannot reach it: use unix:%s/private/... or host:port",
				key, listen, pl.st.queueDir, s.key(), pl.st.queueDir)}
		}
	}
	return listen, nil
}

// inetAddress is Postfix's inet:host:port for a host:port listener; a
// wildcard listener is reached on loopback.
func inetAddress(key, listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", ConfigError{fmt.Errorf("%s = %q is neither host:port nor unix:/path", key, listen)}
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "inet:" + net.JoinHostPort(host, port), nil
}

// inQueue returns path relative to the queue directory, when it is in it.
func (pl *planner) inQueue(path string) (string, bool) {
	rel, err := filepath.Rel(pl.st.queueDir, filepath.Clean(path))
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return "", false
	}
	return rel, true
}
