// Package pickup counts the mail local accounts submit with Postfix's
// sendmail command (PHP's mail(), cron, scripts) against mxdetour-policyd's
// [[limits]]. That mail enters Postfix through pickup and cleanup, never
// through smtpd, so Postfix never asks the policy service about it; the
// milter sees it (non_smtpd_milters) and asks instead, in the policy
// delegation protocol (SMTPD_POLICY_README), on policyd's own policy
// socket: one END-OF-MESSAGE request per message with
// policy_context=limits, recipient_count and two attributes Postfix never
// sends, local_user and recipient_domains. policyd counts it in the same
// store as smtpd's mail, under local_user:NAME.
//
// Who submitted it: pickup prepends "Received: by HOST (Postfix, from
// userid N)\n\tid QUEUEID; DATE", the maildrop file's owner, but Postfix
// never shows milters its own first Received: header (milter8.c,
// "Sendmail compatibility"), and cleanup has no macro with the uid
// (Postfix 3.7.11, measured). So a header_checks line copies it into a
// header the milter does see, before that Received: header and so before
// anything the submitter wrote:
//
//	/^Received: by [^ ]+ \([^,]+, from userid ([0-9]+)\)[[:space:]]+id ([0-9A-Za-z]+);/ PREPEND X-Mxdetour-Local-User: uid=$1 id=$2
//
// The milter believes only the first header of a message, and only when
// its id is the message's queue id (a submitter cannot know it in
// advance), and deletes every such header before the message leaves.
package pickup

import (
	"os/user"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Header is the header the header_checks line above adds.
const Header = "X-Mxdetour-Local-User"

// HeaderChecks is the line of a header_checks regexp table that adds
// Header for mail from pickup.
const HeaderChecks = `/^Received: by [^ ]+ \([^,]+, from userid ([0-9]+)\)[[:space:]]+id ([0-9A-Za-z]+);/ PREPEND ` + Header + `: uid=$1 id=$2`

// IsHeader tells whether a header field name is Header, in any case.
func IsHeader(name string) bool {
	return len(name) == len(Header) && strings.EqualFold(name, Header)
}

// ParseHeader reads Header's value, " uid=1000 id=4XyZ1234".
func ParseHeader(v string) (uid uint32, queueID string, ok bool) {
	u, id, found := strings.Cut(strings.TrimSpace(v), " ")
	u, okU := strings.CutPrefix(u, "uid=")
	id, okI := strings.CutPrefix(id, "id=")
	if !found || !okU || !okI || id == "" || strings.ContainsAny(id, " \t\r\n") {
		return 0, "", false
	}
	n, err := strconv.ParseUint(u, 10, 32)
	if err != nil {
		return 0, "", false
	}
	return uint32(n), id, true
}

// MailOwner is Postfix's mail_owner as Debian and the others install it.
// Mail of that account through pickup is mail requeued with `postsuper
// -r`, counted when it first came in: it is not counted again.
const MailOwner = "postfix"

// Users maps uids to account names (os/user: /etc/passwd, or NSS with
// cgo), caching each for a minute; a uid without an account is "uid:N".
type Users struct {
	mu     sync.Mutex
	m      map[uint32]cachedUser
	now    func() time.Time                     // tests; nil: time.Now
	lookup func(uid string) (*user.User, error) // tests; nil: user.LookupId
}

type cachedUser struct {
	name string
	at   time.Time
}

const userTTL = time.Minute

// Name returns uid's account name.
func (u *Users) Name(uid uint32) string {
	now, lookup := time.Now, user.LookupId
	if u.now != nil {
		now = u.now
	}
	if u.lookup != nil {
		lookup = u.lookup
	}
	t := now()
	u.mu.Lock()
	defer u.mu.Unlock()
	if c, ok := u.m[uid]; ok && t.Sub(c.at) < userTTL {
		return c.name
	}
	name := "uid:" + strconv.FormatUint(uint64(uid), 10)
	if a, err := lookup(strconv.FormatUint(uint64(uid), 10)); err == nil && a.Username != "" {
		name = a.Username
	}
	if u.m == nil || len(u.m) > 10000 {
		u.m = map[uint32]cachedUser{}
	}
	u.m[uid] = cachedUser{name, t}
	return name
}
