package filter

import (
	"strings"

	"github.com/mxdetour/mxdetour/internal/domain"
	"github.com/mxdetour/mxdetour/milter/dkim"
)

// Sender is what the signing decision knows of a message's submitter.
type Sender struct {
	Auth    string // SASL login ({auth_authen}); "" when none
	Trusted bool   // the client is in [milter] trusted_networks
	// Local: Postfix's cleanup submitted the message itself (the sendmail
	// command, pickup, and Postfix's own bounces and notices through
	// internal_mail_filter_classes), signed as trusted mail is; see
	// emulatedClient and session.local.
	Local bool
}

// SignPlan is what the milter does about signing one message: the keys
// that sign it, or why it leaves unsigned. The per-message log line and
// `mxdetour-milter explain` both word it from here.
type SignPlan struct {
	FromDomain string      // the From header's domain; "" when it has none
	Keys       []*dkim.Key // sign with these, in this order; none: not signed
	// Waiting are keys of the domain that do not sign now: a rotation's
	// key whose record was not yet seen published, or an old key retired.
	Waiting []*dkim.Key
	// AlreadySigned are keys whose signature (same d= and s=) the message
	// already carries: never signed twice.
	AlreadySigned []*dkim.Key
	Why           string // why not signed; "" when Keys sign
}

// The reasons a message leaves unsigned, as the log line says them.
const (
	WhyNoKeys        = "no DKIM keys configured"
	WhyNotEligible   = "client neither authenticated nor in trusted_networks (nor mail Postfix posted itself)"
	WhyAuthOff       = "client authenticated, but sign_authenticated = false"
	WhyTrustedOff    = "client in trusted_networks or local, but sign_trusted = false"
	WhyNoKeyFor      = "no key for "                    // + domain + whyNoDefault
	whyNoDefault     = " and no default_domain"         // appended when none is set
	WhyNotPublished  = "no key of its domain signs yet" // + ": " + selectors waiting
	WhyAlreadySigned = "already signed by us"
	// A From header without one domain is worded by dkim.FromDomain.
)

// PlanSigning decides whether a message from s, with the From header
// field values from and the DKIM-Signature values sigs it already
// carries, is signed, and by which keys of st (rot picks among a
// rotation's keys; nil: every key signs).
func PlanSigning(st *State, rot *dkim.Rotation, s Sender, from, sigs []string) SignPlan {
	var p SignPlan
	o := st.Opts
	switch {
	case st.Keys.Len() == 0:
		p.Why = WhyNoKeys
		return p
	case s.Auth != "" && !o.SignAuthenticated && !((s.Trusted || s.Local) && o.SignTrusted):
		p.Why = WhyAuthOff
		return p
	case s.Auth == "" && (s.Trusted || s.Local) && !o.SignTrusted:
		p.Why = WhyTrustedOff
		return p
	case s.Auth == "" && !s.Trusted && !s.Local:
		p.Why = WhyNotEligible
		return p
	}
	d, err := dkim.FromDomain(from)
	if err != nil {
		p.Why = err.Error()
		return p
	}
	p.FromDomain = d
	all := st.Keys.For(d)
	if len(all) == 0 {
		p.Why = WhyNoKeyFor + d
		if o.DefaultDomain == "" {
			p.Why += whyNoDefault
		}
		return p
	}
	p.Keys = rot.Signers(all)
	if len(p.Keys) < len(all) { // else none waits: no search per signed message
		for _, k := range all {
			if !containsKey(p.Keys, k) {
				p.Waiting = append(p.Waiting, k)
			}
		}
	}
	if len(p.Keys) == 0 {
		p.Why = WhyNotPublished + ": " + selectorList(p.Waiting)
		return p
	}
	p.Keys, p.AlreadySigned = dkim.NotYetSigned(p.Keys, sigs, p.Keys[0].Domain)
	if len(p.Keys) == 0 {
		p.Why = WhyAlreadySigned
	}
	return p
}

// Source says where k, chosen for mail from fromDomain, came from: a
// row of the configuration, a file of key_dir, a parent domain's key
// (subdomains = true) or the default key (default_domain).
func Source(k *dkim.Key, fromDomain string) string {
	where := "[[milter.dkim.keys]] row, key_file " + k.File
	if k.FromDir {
		where = "key_dir file " + k.File
	}
	switch {
	case k.Domain == fromDomain:
		return where
	case k.Subdomains && domain.IsSubdomain(fromDomain, k.Domain):
		return "key of the parent domain " + k.Domain + " (subdomains = true), " + where
	}
	return "default key (default_domain = " + k.Domain + "), " + where
}

func containsKey(ks []*dkim.Key, k *dkim.Key) bool {
	for _, x := range ks {
		if x == k {
			return true
		}
	}
	return false
}

func selectorList(ks []*dkim.Key) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = k.Selector + " (" + k.Algorithm + ")"
	}
	return strings.Join(s, ", ")
}
