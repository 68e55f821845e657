package dkim

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/mailauth"
)

// Status is a finding's weight, numbered as Nagios plugins exit.
type Status int

const (
	OK       Status = 0
	Warning  Status = 1
	Critical Status = 2
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Warning:
		return "warning"
	}
	return "critical"
}

// MarshalText writes the status as its word in JSON.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Finding is the outcome of one check of what DNS publishes.
type Finding struct {
	Status  Status `json:"status"`
	Check   string `json:"check"`   // dkim, rotation, spf, dmarc, ptr, helo
	Subject string `json:"subject"` // the record, domain or address checked
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
	// Matches: the record publishes this very key, usable for signing
	// (a dkim finding only).
	Matches bool `json:"-"`
}

// Worst is the highest status of fs (OK when there are none).
func Worst(fs []Finding) Status {
	w := OK
	for _, f := range fs {
		w = max(w, f.Status)
	}
	return w
}

// CheckKey fetches k's record (SELECTOR._domainkey.DOMAIN TXT) and
// compares the key it publishes with k's private key: the key material,
// not the text, so a record split into several strings, folded, or
// written with tags in another order still matches (RFC 6376 section
// 3.6.1).
func CheckKey(ctx context.Context, res lookup.Resolver, k *Key) Finding {
	name := recordName(k)
	f := Finding{Check: "dkim", Subject: name}
	publish := "publish: " + ZoneLine(k.Selector, k.Domain, k.Signer.Public())
	r := res.TXT(ctx, name)
	switch r.Status {
	case lookup.TempFail:
		return f.is(Warning, fmt.Sprintf("lookup failed: %v", r.Err), "check the [dns] servers and the zone's name servers")
	case lookup.NXDomain, lookup.NoData:
		return f.is(Critical, "no TXT record: every receiver fails the signatures of "+k.Selector, publish)
	}
	var recs []string
	for _, t := range r.TXT {
		if strings.Contains(t, "p=") || strings.HasPrefix(strings.TrimSpace(t), "v=DKIM1") {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		return f.is(Critical, fmt.Sprintf("TXT record %q is no DKIM key record", clip(r.TXT[0])), publish)
	case 1:
	default:
		return f.is(Critical, fmt.Sprintf("%d key records: verifiers pick one at random", len(recs)), "keep only the one "+publish)
	}
	rec, err := mailauth.ParseKeyRecord(recs[0])
	switch {
	case errors.Is(err, mailauth.ErrTruncated):
		return f.is(Critical, "record truncated: "+err.Error(), "publish every quoted string of the record: "+ZoneLine(k.Selector, k.Domain, k.Signer.Public()))
	case errors.Is(err, mailauth.ErrRevoked):
		return f.is(Critical, "the record revokes the key (p= is empty) while "+k.File+" still signs with it", "remove the key's row from the config, or "+publish)
	case err != nil:
		return f.is(Critical, "record unusable: "+err.Error(), publish)
	case rec.KeyType != k.Algorithm:
		return f.is(Critical, fmt.Sprintf("the record is k=%s, the key in %s is %s", rec.KeyType, k.File, k.Algorithm), publish)
	case !mailauth.SameKey(k.Signer.Public(), rec.Key):
		return f.is(Critical, "the record publishes another key than "+k.File+" (stale after a rotation, or a copy of another selector)", publish)
	case !rec.AllowsHash("sha256"):
		return f.is(Critical, "h="+strings.Join(rec.Hashes, ":")+" excludes sha256, the only hash signers use (RFC 8301)", "drop h= from the record")
	}
	f.Matches = true
	if rec.Testing() {
		return f.is(Warning, "published and matches "+k.File+", but t=y: receivers treat failing signatures as none", "remove t=y once signatures verify")
	}
	if pk, ok := k.Signer.Public().(*rsa.PublicKey); ok && pk.N.BitLen() < 2048 {
		return f.is(Warning, fmt.Sprintf("published and matches, but RSA %d bits is weak", pk.N.BitLen()), "rotate to a 2048-bit key: mxdetour-milter keygen -next")
	}
	return f.is(OK, fmt.Sprintf("published, matches %s (%s %d)", k.File, k.Algorithm, k.Bits), "")
}

func (f Finding) is(s Status, msg, fix string) Finding {
	f.Status, f.Message, f.Fix = s, msg, fix
	return f
}

func clip(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

// Doctor is what the doctor checks against DNS.
type Doctor struct {
	Keys     *Table
	Addrs    []netip.Addr // our outbound addresses ([self])
	Helo     string       // the name Postfix says in HELO; "" = not checked
	Rotation *Rotation    // the milter's rotation state; nil = none kept
	Now      time.Time
	// Alternate: selectors alternate ([milter.dkim] rotation_selectors),
	// a retired key is on standby, not a record to remove.
	Alternate bool
}

// Run makes every check, one finding each, in a stable order: keys and
// rotations, then per signing domain SPF and DMARC, then per address its
// reverse DNS and the HELO name.
func (d Doctor) Run(ctx context.Context, res lookup.Resolver) []Finding {
	if d.Now.IsZero() {
		d.Now = time.Now()
	}
	if d.Rotation == nil {
		d.Rotation = &Rotation{overlap: 7 * 24 * time.Hour, readOnly: true, seen: map[string]time.Time{}, said: map[string]string{}}
	}
	var out []Finding
	keys := d.Keys.Keys()
	if len(keys) == 0 {
		out = append(out, Finding{Status: Warning, Check: "dkim", Subject: "[milter.dkim]", Message: "no keys configured: nothing is signed",
			Fix: "mxdetour-milter keygen -domain D -selector S, then add the row it prints"})
	}
	for _, fam := range Families(keys) {
		out = append(out, d.family(ctx, res, fam)...)
	}
	var domains []string
	for _, k := range keys {
		if !slices.Contains(domains, k.Domain) {
			domains = append(domains, k.Domain)
		}
	}
	for _, dom := range domains {
		out = append(out, d.spf(ctx, res, dom)...)
		out = append(out, d.dmarc(ctx, res, dom))
	}
	if len(d.Addrs) == 0 {
		out = append(out, Finding{Status: Warning, Check: "ptr", Subject: "[self]", Message: "no outbound address known: SPF and reverse DNS not checked",
			Fix: "set [self] ipv4 and ipv6 to the addresses Postfix sends from"})
	}
	for _, a := range d.Addrs {
		out = append(out, d.ptr(ctx, res, a))
		if d.Helo != "" {
			out = append(out, d.helo(ctx, res, a))
		}
	}
	return out
}

// family checks the keys of one family and, when it rotates, says where
// the rotation stands.
func (d Doctor) family(ctx context.Context, res lookup.Resolver, fam []*Key) []Finding {
	var out []Finding
	p := d.Rotation.PhaseOf(fam, d.Now)
	publishedNow := map[*Key]bool{}
	for _, k := range fam {
		f := CheckKey(ctx, res, k)
		publishedNow[k] = f.Matches
		if slices.Contains(p.Pending, k) && f.Status == Critical {
			f.Status = Warning
			f.Message = "not published yet (the milter signs with " + p.Current.Selector + " until it is): " + f.Message
		}
		if slices.Contains(p.Retired, k) && f.Status == Critical {
			f.Status = OK
			f.Message = "retired, no longer signs: " + f.Message
			f.Fix = "remove its [[milter.dkim.keys]] row"
			if d.Alternate {
				f.Fix = "keygen -next writes its selector's next key"
			}
		}
		out = append(out, f)
	}
	if len(fam) < 2 {
		return out
	}
	rf := Finding{Check: "rotation", Subject: fam[0].Domain + " " + selectors(fam)}
	over := d.Rotation.Overlap()
	switch {
	case len(p.Old) > 0:
		out = append(out, rf.is(OK, fmt.Sprintf("%s signs since %s; %s signs beside it until %s, then its record can go",
			p.Current.Selector, p.Since.Format(time.RFC3339), selectors(p.Old), p.Until.Format(time.RFC3339)), ""))
	case len(p.Retired) > 0 && d.Alternate:
		out = append(out, rf.is(OK, fmt.Sprintf("%s signs since %s; %s no longer signs since %s and waits for the next rotation (keygen -next writes the new key over it)",
			p.Current.Selector, p.Since.Format(time.RFC3339), selectors(p.Retired), p.Until.Format(time.RFC3339)), ""))
	case len(p.Retired) > 0:
		out = append(out, rf.is(Warning, fmt.Sprintf("%s no longer signs since %s: its record can go", selectors(p.Retired), p.Until.Format(time.RFC3339)),
			"remove the TXT record of "+names(p.Retired)+" and its [[milter.dkim.keys]] row"))
	}
	for _, k := range p.Pending {
		if publishedNow[k] {
			out = append(out, rf.is(OK, fmt.Sprintf("%s is published: the milter starts signing with it at its next check (every %s) and signs with %s too for %s more, until about %s",
				k.Selector, RotationCheckInterval, p.Current.Selector, over, d.Now.Add(over).Format(time.RFC3339)), ""))
		}
	}
	return out
}

func (d Doctor) spf(ctx context.Context, res lookup.Resolver, dom string) []Finding {
	var out []Finding
	var mech []string
	for _, a := range d.Addrs {
		if a.Is4() {
			mech = append(mech, "ip4:"+a.String())
		} else {
			mech = append(mech, "ip6:"+a.String())
		}
	}
	for i, a := range d.Addrs {
		f := Finding{Check: "spf", Subject: dom + " " + a.String()}
		result, err := mailauth.SPF(ctx, res, a, dom, d.Helo)
		switch result {
		case "pass":
			out = append(out, f.is(OK, "SPF of "+dom+" passes "+a.String(), ""))
		case "none":
			out = append(out, f.is(Warning, "no SPF record at "+dom,
				fmt.Sprintf("publish: %s. IN TXT \"v=spf1 %s ~all\"", dom, strings.Join(mech, " "))))
		case "fail", "softfail", "neutral":
			out = append(out, f.is(Warning, fmt.Sprintf("SPF of %s does not cover %s (%s)", dom, a, result),
				"add "+mech[i]+" to the SPF record of "+dom))
		case "permerror":
			out = append(out, f.is(Critical, fmt.Sprintf("SPF record of %s is broken (%v): receivers treat it as a fail under DMARC", dom, err),
				"repair it: one v=spf1 record, at most 10 terms that query DNS (include, a, mx, ptr, exists, redirect)"))
		default:
			out = append(out, f.is(Warning, fmt.Sprintf("SPF of %s could not be evaluated (%s: %v)", dom, result, err), "check the [dns] servers and the zone's name servers"))
		}
	}
	return out
}

func (d Doctor) dmarc(ctx context.Context, res lookup.Resolver, dom string) Finding {
	f := Finding{Check: "dmarc", Subject: dom}
	rec, err := mailauth.LookupDMARC(ctx, res, dom)
	switch {
	case errors.Is(err, mailauth.ErrNoDMARC):
		return f.is(Warning, "no DMARC record at _dmarc."+dom+" nor its organizational domain: large receivers want one",
			fmt.Sprintf("publish: _dmarc.%s. IN TXT \"v=DMARC1; p=none; rua=mailto:postmaster@%s\"", dom, dom))
	case err != nil:
		return f.is(Warning, "DMARC record unusable: "+err.Error(), "publish exactly one v=DMARC1 record with p=none, quarantine or reject")
	}
	for _, k := range d.Keys.For(dom) {
		if k.Subdomains && rec.ADKIM == "s" {
			return f.is(Warning, fmt.Sprintf("%s has adkim=s: mail from subdomains of %s, signed d=%s, does not align", rec.Name, dom, dom),
				"use adkim=r, or give each subdomain its own key row")
		}
	}
	if !mailauth.Aligned(dom, dom, rec.ADKIM) {
		return f.is(Warning, "d="+dom+" does not align with "+rec.Name, "")
	}
	return f.is(OK, fmt.Sprintf("%s: p=%s, d=%s aligns (adkim=%s)", rec.Name, rec.Policy, dom, rec.ADKIM), "")
}

// ptr checks forward-confirmed reverse DNS of a (FCrDNS): its PTR names a
// host whose A or AAAA records hold a again. Large receivers refuse mail
// from addresses without it.
func (d Doctor) ptr(ctx context.Context, res lookup.Resolver, a netip.Addr) Finding {
	f := Finding{Check: "ptr", Subject: a.String()}
	fix := "have whoever runs " + a.String() + " (the hosting provider) set its PTR record to the mail host's name"
	if d.Helo != "" {
		fix += " (" + d.Helo + ")"
	}
	r := res.PTR(ctx, a)
	switch r.Status {
	case lookup.TempFail:
		return f.is(Warning, fmt.Sprintf("PTR lookup failed: %v", r.Err), "check the [dns] servers")
	case lookup.NXDomain, lookup.NoData:
		return f.is(Critical, "no PTR record: Gmail and others refuse such senders", fix)
	}
	for _, n := range r.Names {
		if forwardHas(ctx, res, n, a) {
			return f.is(OK, "PTR "+n+", forward-confirmed", "")
		}
	}
	return f.is(Critical, fmt.Sprintf("PTR %s does not resolve back to %s (no forward-confirmed reverse DNS)", strings.Join(r.Names, ", "), a),
		fmt.Sprintf("add %s. IN %s %s, or %s", r.Names[0], rrType(a), a, fix))
}

// helo checks that the HELO name resolves to a and that a's PTR names it.
func (d Doctor) helo(ctx context.Context, res lookup.Resolver, a netip.Addr) Finding {
	f := Finding{Check: "helo", Subject: d.Helo + " " + a.String()}
	if !forwardHas(ctx, res, d.Helo, a) {
		return f.is(Warning, fmt.Sprintf("the HELO name %s does not resolve to %s", d.Helo, a), fmt.Sprintf("add %s. IN %s %s", d.Helo, rrType(a), a))
	}
	if r := res.PTR(ctx, a); r.Status == lookup.Answer && !slices.Contains(r.Names, strings.ToLower(strings.TrimSuffix(d.Helo, "."))) {
		return f.is(Warning, fmt.Sprintf("%s resolves to %s, but its PTR names %s", d.Helo, a, strings.Join(r.Names, ", ")),
			"make the PTR of "+a.String()+" and the HELO name (Postfix's smtp_helo_name) the same name")
	}
	return f.is(OK, d.Helo+" resolves to "+a.String(), "")
}

func forwardHas(ctx context.Context, res lookup.Resolver, name string, a netip.Addr) bool {
	r := res.A(ctx, name)
	if a.Is6() {
		r = res.AAAA(ctx, name)
	}
	return slices.Contains(r.Addrs, a)
}

func rrType(a netip.Addr) string {
	if a.Is4() {
		return "A"
	}
	return "AAAA"
}
