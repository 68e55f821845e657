package mailauth

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/publicsuffix"

	"github.com/mxdetour/mxdetour/internal/lookup"
)

// DMARC is a parsed DMARC record (RFC 7489 section 6.3).
type DMARC struct {
	Name   string // where it was found: _dmarc.DOMAIN or _dmarc.ORGDOMAIN
	Policy string // p=
	ADKIM  string // adkim=: "r" (relaxed, the default) or "s" (strict)
	Raw    string
}

// ErrNoDMARC means neither the domain nor its organizational domain
// publishes a DMARC record.
var ErrNoDMARC = errors.New("no DMARC record")

// LookupDMARC finds the DMARC record that applies to mail from domain:
// _dmarc.DOMAIN, else _dmarc.ORGDOMAIN (RFC 7489 section 6.6.3, the
// organizational domain by the public suffix list). A temporary failure
// is an error other than ErrNoDMARC.
func LookupDMARC(ctx context.Context, res lookup.Resolver, domain string) (*DMARC, error) {
	names := []string{domain}
	if org := OrgDomain(domain); org != domain {
		names = append(names, org)
	}
	for _, d := range names {
		name := "_dmarc." + d
		r := res.TXT(ctx, name)
		if r.Status == lookup.TempFail {
			return nil, fmt.Errorf("%s: %w", name, r.Err)
		}
		var recs []string
		for _, t := range r.TXT {
			if strings.HasPrefix(t, "v=DMARC1") {
				recs = append(recs, t)
			}
		}
		switch len(recs) {
		case 0:
			continue
		case 1:
			return parseDMARC(name, recs[0])
		default:
			return nil, fmt.Errorf("%s has %d DMARC records: receivers then apply none (RFC 7489 section 6.6.3)", name, len(recs))
		}
	}
	return nil, ErrNoDMARC
}

func parseDMARC(name, txt string) (*DMARC, error) {
	tags, err := parseTags(txt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	d := &DMARC{Name: name, Policy: strings.ToLower(tags["p"]), ADKIM: strings.ToLower(tags["adkim"]), Raw: txt}
	if d.ADKIM == "" {
		d.ADKIM = "r"
	}
	switch d.Policy {
	case "none", "quarantine", "reject":
	default:
		return nil, fmt.Errorf("%s: p=%q is not none, quarantine or reject", name, tags["p"])
	}
	if d.ADKIM != "r" && d.ADKIM != "s" {
		return nil, fmt.Errorf("%s: adkim=%q is not r or s", name, d.ADKIM)
	}
	return d, nil
}

// OrgDomain is the organizational domain of domain (RFC 7489 section
// 3.2): one label below its public suffix.
func OrgDomain(domain string) string {
	org, err := publicsuffix.EffectiveTLDPlusOne(domain)
	if err != nil {
		return domain
	}
	return org
}

// Aligned says whether a DKIM signature with d= signingDomain aligns with
// mail whose From domain is fromDomain under mode adkim (RFC 7489 section
// 3.1.1).
func Aligned(signingDomain, fromDomain, adkim string) bool {
	if adkim == "s" {
		return strings.EqualFold(signingDomain, fromDomain)
	}
	return strings.EqualFold(OrgDomain(signingDomain), OrgDomain(fromDomain))
}
