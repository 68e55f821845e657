package server

import (
	"strings"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/milter/dkim"
	"github.com/mxdetour/mxdetour/milter/filter"
)

// The milter's libraries know nothing of the configuration file: these
// map its sections onto their options (internal/setup does the same for
// the shared libraries). The admin commands use them too.

// FilterOptions are the filter's choices of [milter], [milter.dkim] and
// [domains].
func FilterOptions(c *config.Config) filter.Options {
	return filter.Options{
		TrustedNetworks:   c.Milter.TrustedNetworks,
		RejectReserved:    c.Milter.RejectReserved,
		Reserved:          c.Domains.Reserved,
		TempfailOnError:   c.Milter.OnError == "tempfail",
		SignAuthenticated: c.Milter.DKIM.SignAuthenticated,
		SignTrusted:       c.Milter.DKIM.SignTrusted,
		DefaultDomain:     c.Milter.DKIM.DefaultDomain,
	}
}

// SignOptions are the signing choices of [milter.dkim].
func SignOptions(c config.DKIM) dkim.Options {
	h, b, _ := strings.Cut(c.Canonicalization, "/")
	return dkim.Options{HeaderCanon: h, BodyCanon: b, Headers: c.Headers, Oversign: c.OversignHeaders}
}

// KeyTable says where the keys of [milter.dkim] come from: its rows,
// key_dir, default_domain.
func KeyTable(c config.DKIM) dkim.TableOptions {
	return dkim.TableOptions{Keys: KeyRows(c.Keys), KeyDir: c.KeyDir, KeyFileTemplate: c.KeyFileTemplate,
		DefaultDomain: c.DefaultDomain, AllowGroupReadable: c.AllowGroupReadable}
}

// KeyRows are the [[milter.dkim.keys]] rows.
func KeyRows(ks []config.DKIMKey) []dkim.KeyRow {
	rows := make([]dkim.KeyRow, len(ks))
	for i, k := range ks {
		rows[i] = dkim.KeyRow{Domain: k.Domain, Selector: k.Selector, KeyFile: k.KeyFile, Subdomains: k.Subdomains}
	}
	return rows
}
