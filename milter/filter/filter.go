// Package filter holds the milter stages of mxdetour-milter, on the
// low-level API of github.com/d--j/go-milter (Sendmail milter protocol 6):
//
//   - MAIL FROM: the country rules ([milter.geo], package geo) refuse
//     clients by country, origin AS or network (550 5.7.1, or the rule's
//     reply), or log what they would refuse; authenticated clients,
//     trusted networks and the allow list are exempt;
//   - RCPT TO: recipients in reserved domains (RFC 2606/6761 and the
//     configured ones) are refused (550 5.1.2), the others go on;
//   - end of headers, body, end of message: authenticated or trusted
//     mail with a key for its From domain is DKIM-signed as it streams by,
//     and the signatures are inserted at the top of the header;
//   - end of message, for mail a local account submitted with the sendmail
//     command (cleanup's, with Postfix's X-Mxdetour-Local-User header
//     first; see package pickup): mxdetour-policyd is asked to count it
//     against [[limits]], and a message over a limit is quarantined
//     (Postfix's hold queue). smtpd's mail is never asked about here:
//     Postfix asks policyd itself, and signing it costs nothing more.
//
// Mail that Postfix's cleanup submits itself (non_smtpd_milters: the
// sendmail command, pickup, QMQP) cannot be refused at RCPT: Postfix turns
// such a reject into "milter configuration error: can't reject recipient
// in non-smtpd(8) submission" and a 4.3.5 deferral, retried for ever. So
// the reserved-domain reject is given only to smtpd's sessions; for the
// others the recipient goes on and the socketmap (error:5.1.2) bounces it.
// cleanup emulates an SMTP client, which is told apart (see
// cleanupEmulated) by its client port 0 at connect and, at RCPT, by
// {rcpt_addr} without {rcpt_mailer}, which cleanup never sets; when in
// doubt the recipient goes on. ({daemon_addr} does not tell them apart:
// Postfix 3.7.11's cleanup sends it too, as 127.0.0.1.)
//
// The low-level API is used rather than mailfilter so that the country
// rule can answer at MAIL FROM, the connect arguments and the macros of
// each stage are at hand, and the body is signed as it streams instead of
// being buffered. Every stage fails open: an internal error or a panic
// accepts the message unsigned (or tempfails it, if so configured), is
// logged and counted.
package filter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/d--j/go-milter"
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/domain"
	"github.com/mxdetour/mxdetour/internal/geo"
	"github.com/mxdetour/mxdetour/milter/dkim"
	"github.com/mxdetour/mxdetour/milter/pickup"
)

// Options are the filter's own choices ([milter] and [domains]): whom it
// trusts, what it refuses, whom it signs for, what a failure does.
type Options struct {
	// TrustedNetworks: clients whose mail is signed as trusted, and who
	// are exempt from the country rules.
	TrustedNetworks []netip.Prefix
	// RejectReserved refuses recipients in reserved domains (RFC 2606,
	// RFC 6761, and Reserved) at RCPT.
	RejectReserved bool
	Reserved       []string
	// TempfailOnError tempfails a message on an internal error; false:
	// it is accepted unsigned.
	TempfailOnError bool
	// SignAuthenticated signs the mail of clients that authenticated,
	// SignTrusted that of trusted networks and of Postfix itself.
	SignAuthenticated, SignTrusted bool
	// DefaultDomain is default_domain as configured, "" when none; the
	// key table applies it, the reasons name it.
	DefaultDomain string
}

// State is what a reload replaces, all at once.
type State struct {
	Opts Options
	Keys *dkim.Table
	Sign dkim.Options
	Geo  *geo.Blocker
	// Pickup counts the mail local accounts submit with the sendmail
	// command against policyd's [[limits]]; nil: not counted.
	Pickup *pickup.Counter
}

// Stats count since start.
type Stats struct {
	Messages, Signed, NotSigned, RejectedReserved, RejectedCountry, Errors, Panics atomic.Uint64
	// LoggedCountry counts clients a log-only country rule would have
	// refused.
	LoggedCountry atomic.Uint64
	// Mail of local accounts (sendmail, pickup): counted by policyd,
	// held over a limit, or gone on uncounted (no header, policyd not
	// answering in time).
	LocalCounted, LocalHeld, LocalUncounted atomic.Uint64
}

// Filter creates one milter per Postfix connection.
type Filter struct {
	st      atomic.Pointer[State]
	log     *zap.Logger
	stats   Stats
	observe func(took time.Duration) // metrics; nil when off
	// rotation picks, among a domain's keys, those that sign while one
	// is being replaced (dkim.Rotation); nil: every key signs.
	rotation atomic.Pointer[dkim.Rotation]
}

// Rotate makes r pick the signing keys of every later message; it lives
// across reloads.
func (f *Filter) Rotate(r *dkim.Rotation) { f.rotation.Store(r) }

// Observe registers f to be told how long each message took from MAIL
// FROM to the end of message (metrics). Call it before serving.
func (f *Filter) Observe(fn func(took time.Duration)) { f.observe = fn }

// New returns a filter working with st. The warnings of the go-milter
// library (protocol errors, panics, connections closed over the cap) go to
// log, the logger of the filter created last.
func New(st *State, log *zap.Logger) *Filter {
	f := &Filter{log: log}
	f.st.Store(st)
	libraryLog.Store(log.Named("go-milter"))
	routeLibraryLog.Do(func() {
		milter.LogWarning = func(format string, v ...any) {
			libraryLog.Load().Warn(fmt.Sprintf(format, v...))
		}
	})
	return f
}

var (
	libraryLog      atomic.Pointer[zap.Logger]
	routeLibraryLog sync.Once
)

// Swap makes st the state of every later message (SIGHUP).
func (f *Filter) Swap(st *State) { f.st.Store(st) }

// Stats returns the counters.
func (f *Filter) Stats() *Stats { return &f.stats }

// Limits on what one Postfix connection may hold (see ServerOptions).
const (
	// IdleTimeout closes a milter connection that sent no command for this
	// long. Postfix keeps it open and silent while the SMTP client thinks,
	// up to smtpd_timeout (300 s) per SMTP command: stay above that.
	IdleTimeout = 330 * time.Second
	// CommandTimeout bounds the rest of a packet once it has begun, as
	// Postfix's milter_command_timeout (30 s) bounds our answers.
	CommandTimeout = 30 * time.Second
	// MaxConnections caps the open milter connections. Each smtpd or
	// cleanup process holds one; Postfix's default_process_limit is 100.
	// Over the cap the connection idle longest is closed, so that Postfix
	// is never locked out (its default action applies to that session).
	MaxConnections = 1000
)

// ServerOptions are the go-milter server options for this filter,
// including the limits above; options appended after them override them.
func (f *Filter) ServerOptions() []milter.Option {
	return []milter.Option{
		milter.WithMilter(func() milter.Milter { return &session{f: f} }),
		milter.WithIdleTimeout(IdleTimeout),
		milter.WithCommandTimeout(CommandTimeout),
		milter.WithMaxConnections(MaxConnections),
		// Quarantine: Postfix puts a local account's message over a limit on hold.
		milter.WithActions(milter.OptAddHeader | milter.OptChangeHeader | milter.OptQuarantine),
		milter.WithProtocols(requiredProtocol | wantedProtocol),
		milter.WithNegotiationCallback(negotiate),
		milter.WithMacroRequest(milter.StageConnect, []milter.MacroName{milter.MacroDaemonName, milter.MacroDaemonAddr, milter.MacroMTAFQDN}),
		milter.WithMacroRequest(milter.StageMail, []milter.MacroName{milter.MacroAuthAuthen, milter.MacroAuthType, milter.MacroQueueId}),
		// Both: smtpd sends both, cleanup only {rcpt_addr} (cleanupEmulated).
		milter.WithMacroRequest(milter.StageRcpt, []milter.MacroName{milter.MacroRcptAddr, milter.MacroRcptMailer}),
		milter.WithMacroRequest(milter.StageEOM, []milter.MacroName{milter.MacroQueueId}),
	}
}

// The protocol steps we ask the MTA to leave out. Every reply the MTA
// waits for is a round trip: Postfix (milter protocol 6, MILTER_README;
// milter8.c honours every SMFIP_NR_* flag and SMFIR_SKIP) would otherwise
// wait for our answer to each header field. We still answer MAIL and RCPT
// (they may reject), the body (a message we do not sign skips the rest of
// it) and the end of message. A failure in a stage that has no reply is
// answered at the next stage that has one (session.pending).
const (
	// requiredProtocol: without these the session is refused, as before.
	requiredProtocol = milter.OptHeaderLeadingSpace | milter.OptNoUnknown | milter.OptNoHelo
	// wantedProtocol: taken when the MTA offers them.
	wantedProtocol = milter.OptNoData | milter.OptNoConnReply | milter.OptNoHeaderReply |
		milter.OptNoEOHReply | milter.OptSkip
)

// negotiate is go-milter's default negotiation (the MTA's version, every
// action we need, every protocol option we need) plus the wanted options
// the MTA offers.
func negotiate(mtaVersion, _ uint32, mtaActions, actions milter.OptAction, mtaProtocol, _ milter.OptProtocol, offered milter.DataSize) (uint32, milter.OptAction, milter.OptProtocol, milter.DataSize, error) {
	if actions&mtaActions != actions {
		return 0, 0, 0, 0, fmt.Errorf("milter: negotiate: MTA does not offer required actions. offered: %q requested: %q", mtaActions, actions)
	}
	if requiredProtocol&mtaProtocol != requiredProtocol {
		return 0, 0, 0, 0, fmt.Errorf("milter: negotiate: MTA does not offer required protocol options. offered: %q requested: %q", mtaProtocol, requiredProtocol)
	}
	return mtaVersion, actions, requiredProtocol | wantedProtocol&mtaProtocol, offered, nil
}

// session is one Postfix connection; a message is reset at each MAIL FROM.
type session struct {
	f        *Filter
	addr     netip.Addr
	nonSMTPD bool // the connection looks like cleanup's emulated client (cleanupEmulated)

	// the current message
	st       *State
	auth     string
	trusted  bool
	header   bytes.Buffer
	names    []string
	from     []string
	dkimSigs []string // values of the DKIM-Signature fields the message has
	signing  *dkim.Signing
	keys     []*dkim.Key
	sdomain  string
	why      string // why not signed
	rejected []string
	started  time.Time
	// mail of local accounts (package pickup): headers seen, the value of
	// the first when it is pickup.Header, how many pickup.Header fields
	// to delete, cleanup's recipients and their domains, and whether a
	// recipient came with smtpd's {rcpt_mailer} (then it is no
	// cleanup's mail after all: smtpd on a unix socket has port 0).
	nheaders, ours int
	localHdr       string
	sender         string
	rcpts          int
	domains        []string
	smtpdRcpt      bool
	local          pickup.Outcome
	// pending is a failure's answer (accept unsigned, or tempfail) from a
	// stage whose reply the MTA does not wait for, given at the next
	// stage that has a reply; connResp the same for the connect stage,
	// given at every MAIL of the connection, as Postfix would have
	// applied it to the whole connection.
	pending, connResp *milter.Response
}

// NewConnection starts a connection, or the next one Postfix sends over
// the same milter connection (SMFIC_QUIT_NC).
func (s *session) NewConnection(milter.Modifier) (err error) {
	defer s.recoverQuietly("new connection")
	s.reset()
	return nil
}

func (s *session) Connect(host, family string, port uint16, addr string, m milter.Modifier) (resp *milter.Response, err error) {
	s.connResp = nil
	defer s.hold(&s.connResp, m, milter.OptNoConnReply, &resp)
	defer s.recover("connect", &resp)
	s.addr, _ = netip.ParseAddr(strings.TrimPrefix(addr, "IPv6:"))
	s.addr = s.addr.Unmap()
	s.nonSMTPD = emulatedClient(port, m)
	return milter.RespContinue, nil
}

// emulatedClient tells, at connect, whether the client looks like the one
// Postfix's cleanup emulates for non_smtpd_milters. Measured on Postfix
// 3.7.11 (sendmail, pickup), with the default macro lists:
//
//	cleanup: host "localhost", family inet, port 0, address "127.0.0.1";
//	         j, {daemon_name} = $myhostname, {daemon_addr} "127.0.0.1",
//	         {daemon_port} "0", v, _ "localhost [127.0.0.1]"
//	smtpd:   the same for a client on 127.0.0.1, except the port: the
//	         client's real one; {daemon_addr}/{daemon_port} are smtpd's
//	         listening address and port.
//
// cleanup takes the port from the queue file's client attributes when the
// submitter passed them, else "0"; a TCP client never has port 0. An
// empty {daemon_addr} (we ask for it; smtpd has sent it since Postfix 3.2)
// is the non-smtpd sign of older versions. (smtpd on a UNIX-domain socket
// also reports port 0: it loses the RCPT reject, not its mail.)
func emulatedClient(port uint16, m milter.Modifier) bool {
	return port == 0 || m.Get(milter.MacroDaemonAddr) == ""
}

// postedLocally tells whether Postfix's cleanup posted the message itself
// (sendmail, pickup, bounces): its emulated client, always on loopback,
// so that an smtpd that sends no {daemon_addr} (Postfix before 3.2) is
// never taken for it.
func (s *session) postedLocally() bool { return s.nonSMTPD && s.addr.IsLoopback() }

// cleanupEmulated tells whether the recipient at hand comes from Postfix's
// cleanup (non_smtpd_milters), which cannot apply a reject at RCPT. We ask
// for {rcpt_addr} and {rcpt_mailer} at RCPT: smtpd answers both (its
// {rcpt_mailer} is the transport, never empty), while cleanup's macro
// table knows {rcpt_addr} but not {rcpt_mailer} (3.7.11: "R" macros
// {rcpt_addr}="user@example.org" only). A client that sends neither (not
// Postfix, or one that ignores our request) is judged by the connect.
func (s *session) cleanupEmulated(m milter.Modifier) bool {
	if s.nonSMTPD {
		return true
	}
	return m.Get(milter.MacroRcptAddr) != "" && m.Get(milter.MacroRcptMailer) == ""
}

func (s *session) Helo(string, milter.Modifier) (*milter.Response, error) {
	return milter.RespContinue, nil
}

func (s *session) MailFrom(from, _ string, m milter.Modifier) (resp *milter.Response, err error) {
	defer s.recover("mail", &resp)
	s.reset()
	if s.connResp != nil {
		return s.connResp, nil
	}
	s.st = s.f.st.Load()
	s.started = time.Now()
	s.f.stats.Messages.Add(1)
	if s.nonSMTPD {
		s.sender = milter.RemoveAngle(from)
	}
	s.auth = m.Get(milter.MacroAuthAuthen)
	s.trusted = inAny(s.addr, s.st.Opts.TrustedNetworks)
	if countryExempt(s.st, Sender{Auth: s.auth, Trusted: s.trusted}) != "" {
		return milter.RespContinue, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, gerr := s.st.Geo.Check(ctx, s.addr)
	// A reload swapped the state since it was loaded above, and closed its
	// country source: ask the new one.
	for errors.Is(gerr, geo.ErrClosed) && s.f.st.Load() != s.st {
		s.st = s.f.st.Load()
		v, gerr = s.st.Geo.Check(ctx, s.addr)
	}
	if gerr != nil {
		s.f.log.Warn("country rules: lookup failed; accepting", zap.Stringer("client", s.addr), zap.Error(gerr))
		return milter.RespContinue, nil
	}
	return s.geoVerdict(v, from, m), nil
}

// geoVerdict applies what the country rules say of the client: refused
// (550 5.7.1, or the rule's reply), logged only, or admitted.
func (s *session) geoVerdict(v geo.Verdict, from string, m milter.Modifier) *milter.Response {
	if v.Rule < 0 || v.Allow {
		return milter.RespContinue
	}
	f := []zap.Field{zap.Stringer("client", s.addr), zap.String("rule", v.Name), zap.String("matched", v.Matched),
		zap.String("country", v.Country), zap.String("from", from)}
	if id := m.Get(milter.MacroQueueId); id != "" {
		f = append(f, zap.String("queue_id", id))
	}
	if v.LogOnly {
		s.f.stats.LoggedCountry.Add(1)
		s.f.log.Info("would refuse (log-only rule): accepted", f...)
		return milter.RespContinue
	}
	s.f.stats.RejectedCountry.Add(1)
	s.f.log.Info("rejected by a country rule", f...)
	code, reason := geoReply(v)
	resp, err := milter.RejectWithCodeAndReason(code, reason)
	if err != nil { // replies are validated by config: not reached
		return milter.RespReject
	}
	return resp
}

// geoReply is the rule's reply split into code and text ("550", "5.7.1
// ..."), else today's default naming the country or the network.
func geoReply(v geo.Verdict) (uint16, string) {
	if c, text, ok := strings.Cut(v.Reply, " "); ok {
		if n, err := strconv.ParseUint(c, 10, 16); err == nil {
			return uint16(n), text
		}
	}
	if strings.HasPrefix(v.Matched, "country ") {
		return 550, fmt.Sprintf("5.7.1 Client host rejected: mail from your country (%s) is not accepted here", v.Country)
	}
	return 550, "5.7.1 Client host rejected: mail from your network is not accepted here"
}

func (s *session) RcptTo(rcpt, _ string, m milter.Modifier) (resp *milter.Response, err error) {
	defer s.recover("rcpt", &resp)
	if s.nonSMTPD && s.st != nil && s.st.Pickup != nil {
		s.noteRecipient(rcpt, m)
	}
	if s.st == nil {
		return milter.RespContinue, nil
	}
	text := reservedReply(s.st, rcpt)
	if text == "" {
		return milter.RespContinue, nil
	}
	if mailer := m.Get(milter.MacroRcptMailer); mailer == "local" || mailer == "virtual" {
		// Postfix delivers it itself (a host named under a reserved
		// domain, root@localhost): its own mail, never refused here.
		return milter.RespContinue, nil
	}
	if s.cleanupEmulated(m) {
		// Postfix would defer the whole message (4.3.5) and retry it for
		// ever; the socketmap's error:5.1.2 bounces this recipient instead.
		s.f.log.Info("reserved recipient of a non-SMTP submission: not refused at RCPT, Postfix cannot apply that here",
			zap.String("rcpt", rcpt), zap.String("queue_id", m.Get(milter.MacroQueueId)))
		return milter.RespContinue, nil
	}
	s.f.stats.RejectedReserved.Add(1)
	s.rejected = append(s.rejected, rcpt)
	return milter.RejectWithCodeAndReason(550, text)
}

// noteRecipient keeps what policyd is told of a cleanup message's
// recipients: how many, and their domains (for the alert; at most 16).
func (s *session) noteRecipient(rcpt string, m milter.Modifier) {
	if m.Get(milter.MacroRcptMailer) != "" {
		s.smtpdRcpt = true
		return
	}
	s.rcpts++
	d, err := domain.FromAddress(rcpt)
	if err != nil || len(s.domains) >= 16 || slices.Contains(s.domains, d) {
		return
	}
	s.domains = append(s.domains, d)
}

func (s *session) Data(milter.Modifier) (*milter.Response, error) { return milter.RespContinue, nil }

func (s *session) Header(name, value string, m milter.Modifier) (resp *milter.Response, err error) {
	defer s.hold(&s.pending, m, milter.OptNoHeaderReply, &resp)
	defer s.recover("header", &resp)
	if s.pending != nil {
		return milter.RespContinue, nil
	}
	s.nheaders++
	if pickup.IsHeader(name) {
		// Postfix's, when first in cleanup's mail; deleted at the end
		// of message in any case, so never signed.
		if s.nheaders == 1 && s.nonSMTPD {
			s.localHdr = value
		}
		s.ours++
		return milter.RespContinue, nil
	}
	s.header.WriteString(name)
	s.header.WriteByte(':')
	s.header.WriteString(strings.ReplaceAll(value, "\n", "\r\n"))
	s.header.WriteString("\r\n")
	s.names = append(s.names, name)
	if strings.EqualFold(name, "From") {
		s.from = append(s.from, value)
	}
	if strings.EqualFold(name, "DKIM-Signature") {
		s.dkimSigs = append(s.dkimSigs, value)
	}
	return milter.RespContinue, nil
}

// Headers decides whether to sign, and starts signing. An end of headers
// repeated within one message (Postfix never does that) starts over: the
// signature begun at the previous one is aborted, never left running.
func (s *session) Headers(m milter.Modifier) (resp *milter.Response, err error) {
	defer s.hold(&s.pending, m, milter.OptNoEOHReply, &resp)
	defer s.recover("headers", &resp)
	if s.pending != nil {
		return s.pending, nil
	}
	s.abortSigning()
	s.why, s.keys, s.sdomain = "", nil, ""
	if s.st == nil {
		return milter.RespContinue, nil
	}
	p := PlanSigning(s.st, s.f.rotation.Load(), Sender{Auth: s.auth, Trusted: s.trusted, Local: s.postedLocally()}, s.from, s.dkimSigs)
	for _, k := range p.AlreadySigned {
		s.f.log.Info("already signed by us", zap.String("d", k.Domain), zap.String("s", k.Selector))
	}
	s.keys, s.why = p.Keys, p.Why
	if s.why == "" {
		s.sdomain = s.keys[0].Domain
		s.signing, err = dkim.Start(s.header.Bytes(), s.names, s.keys, s.st.Sign, s.sdomain)
		if err != nil {
			return s.fail("starting DKIM signature", err), nil
		}
	}
	return milter.RespContinue, nil
}

func (s *session) BodyChunk(chunk []byte, m milter.Modifier) (resp *milter.Response, err error) {
	defer s.recover("body", &resp)
	if r := s.takePending(); r != nil {
		return r, nil
	}
	if s.signing == nil {
		if m.Protocol()&milter.OptSkip != 0 {
			return milter.RespSkip, nil
		}
		return milter.RespContinue, nil
	}
	if _, err := s.signing.Write(chunk); err != nil {
		return s.fail("signing the body", err), nil
	}
	return milter.RespContinue, nil
}

func (s *session) EndOfMessage(m milter.Modifier) (resp *milter.Response, err error) {
	defer s.recover("end of message", &resp)
	if r := s.takePending(); r != nil {
		return r, nil
	}
	queueID := m.Get(milter.MacroQueueId)
	s.countLocal(queueID, m)
	if err := s.deleteOurHeaders(m); err != nil {
		return s.fail("deleting the "+pickup.Header+" header", err), nil
	}
	if s.signing == nil {
		s.f.stats.NotSigned.Add(1)
		s.logMessage(queueID, nil)
		return milter.RespAccept, nil
	}
	sigs, err := s.signing.Finish()
	s.signing = nil
	if err != nil {
		return s.fail("finishing DKIM signatures", err), nil
	}
	// Insert the last first, each at the top: they end up in key order,
	// right below Postfix's own Received header.
	for i := len(sigs) - 1; i >= 0; i-- {
		if err := m.InsertHeader(1, "DKIM-Signature", strings.ReplaceAll(sigs[i], "\r\n", "\n")); err != nil {
			return s.fail("inserting the signature", err), nil
		}
	}
	s.f.stats.Signed.Add(1)
	s.logMessage(queueID, s.keys)
	return milter.RespAccept, nil
}

// countLocal asks policyd to count a message of cleanup's (sendmail,
// pickup) and quarantines it when a limit refuses it. smtpd's mail is
// never asked about: Postfix's own policy requests count it.
func (s *session) countLocal(queueID string, m milter.Modifier) {
	if s.st == nil || s.st.Pickup == nil || !s.nonSMTPD || s.smtpdRcpt {
		return
	}
	if s.localHdr == "" && s.sender == "" {
		// Postfix's own bounce or notice (internal_mail_filter_classes):
		// no local account's mail, nothing to count.
		return
	}
	s.local = s.st.Pickup.Count(&pickup.Message{QueueID: queueID, Sender: s.sender, Recipients: s.rcpts,
		Domains: s.domains, Header: s.localHdr})
	switch {
	case s.local.Held != "":
		if err := m.Quarantine(s.local.Held); err != nil {
			s.f.log.Error("quarantine failed: the message goes on", zap.String("queue_id", queueID), zap.Error(err))
			s.local.Held = ""
			break
		}
		s.f.stats.LocalHeld.Add(1)
	case s.local.Counted:
		s.f.stats.LocalCounted.Add(1)
	default:
		s.f.stats.LocalUncounted.Add(1)
	}
}

// deleteOurHeaders deletes every pickup.Header field: Postfix's header
// checks add it for us, not for the recipients (and a submitter's own
// goes too).
func (s *session) deleteOurHeaders(m milter.Modifier) error {
	for i := s.ours; i >= 1; i-- {
		if err := m.ChangeHeader(i, pickup.Header, ""); err != nil {
			return err
		}
	}
	s.ours = 0
	return nil
}

func (s *session) logMessage(queueID string, signedWith []*dkim.Key) {
	f := []zap.Field{zap.String("queue_id", queueID), zap.Stringer("client", s.addr), zap.String("auth", s.auth)}
	if s.local.LocalUser != "" {
		f = append(f, zap.String("local_user", s.local.LocalUser), zap.Bool("counted", s.local.Counted))
		if s.local.Held != "" {
			f = append(f, zap.String("held", s.local.Held))
		}
	}
	if len(signedWith) > 0 {
		var sel []string
		for _, k := range signedWith {
			sel = append(sel, k.Selector+" ("+k.Algorithm+")")
		}
		f = append(f, zap.String("signed_d", s.sdomain), zap.Strings("signed_s", sel))
	} else {
		f = append(f, zap.String("not_signed", s.why))
	}
	if len(s.rejected) > 0 {
		f = append(f, zap.Strings("rejected_reserved", s.rejected))
	}
	took := time.Since(s.started)
	f = append(f, zap.Duration("took", took))
	s.f.log.Info("message", f...)
	if s.f.observe != nil {
		s.f.observe(took)
	}
}

// fail handles our own failure: accept unsigned (or tempfail, if the
// configuration says so), loudly.
func (s *session) fail(what string, err error) *milter.Response {
	s.f.stats.Errors.Add(1)
	s.abortSigning()
	s.why = what + " failed"
	if s.st != nil && s.st.Opts.TempfailOnError {
		s.f.log.Error(what+" failed; tempfailing the message", zap.Error(err))
		return milter.RespTempFail
	}
	s.f.log.Error(what+" failed; accepting the message unsigned", zap.Error(err))
	return milter.RespAccept
}

// hold keeps a stage's decisive answer in *to when the MTA does not wait
// for the reply of that stage (opt negotiated), so that a later stage
// gives it.
func (s *session) hold(to **milter.Response, m milter.Modifier, opt milter.OptProtocol, resp **milter.Response) {
	if r := *resp; r != nil && !r.Continue() && m.Protocol()&opt != 0 {
		*to = r
	}
}

// takePending returns the held answer of an earlier stage, once.
func (s *session) takePending() *milter.Response {
	r := s.pending
	s.pending = nil
	return r
}

// recover turns a panic in a stage into fail's answer.
func (s *session) recover(stage string, resp **milter.Response) {
	if p := recover(); p != nil {
		s.f.stats.Panics.Add(1)
		s.f.log.Error("panic in milter stage", zap.String("stage", stage), zap.Any("panic", p), zap.Stack("stack"))
		*resp = s.fail(stage, fmt.Errorf("panic: %v", p))
	}
}

// recoverQuietly logs and counts a panic in a stage that has no answer to
// give; the signature in progress, if any, is dropped.
func (s *session) recoverQuietly(stage string) {
	if p := recover(); p != nil {
		s.f.stats.Panics.Add(1)
		s.f.log.Error("panic in milter stage", zap.String("stage", stage), zap.Any("panic", p), zap.Stack("stack"))
		s.abortAfterPanic()
	}
}

// abortAfterPanic closes the signature in progress, whose go-msgauth
// goroutines would otherwise live on; a second panic there only drops it.
func (s *session) abortAfterPanic() {
	defer func() { _ = recover(); s.signing = nil }()
	s.abortSigning()
}

func (s *session) Abort(milter.Modifier) error {
	defer s.recoverQuietly("abort")
	s.reset()
	return nil
}

func (s *session) Unknown(string, milter.Modifier) (*milter.Response, error) {
	return milter.RespContinue, nil
}

func (s *session) Cleanup(milter.Modifier) {
	defer s.recoverQuietly("cleanup")
	s.reset()
}

// abortSigning stops the signature in progress, if any: go-msgauth runs a
// goroutine per signer until it is closed.
func (s *session) abortSigning() {
	if s.signing != nil {
		sg := s.signing
		s.signing = nil
		sg.Abort()
	}
}

func (s *session) reset() {
	s.abortSigning()
	s.st, s.auth, s.trusted, s.keys, s.sdomain, s.why, s.pending = nil, "", false, nil, "", "", nil
	s.header.Reset()
	s.names, s.from, s.dkimSigs, s.rejected = s.names[:0], s.from[:0], s.dkimSigs[:0], nil
	s.nheaders, s.ours, s.localHdr, s.rcpts, s.domains, s.smtpdRcpt, s.local = 0, 0, "", 0, s.domains[:0], false, pickup.Outcome{}
	s.sender = ""
}

func inAny(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
