// Package geotest writes the MaxMind-format country databases that the
// country rules' tests read.
package geotest

import (
	"net"
	"os"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// WriteDB writes a GeoLite2-Country database at path that places each
// network (CIDR) in its country (ISO code), stamped as built at built
// (zero: now).
func WriteDB(t testing.TB, path string, built time.Time, countries map[string]string) {
	t.Helper()
	if built.IsZero() {
		built = time.Now()
	}
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoLite2-Country", RecordSize: 24,
		IncludeReservedNetworks: true, BuildEpoch: built.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	for cidr, cc := range countries {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := tree.Insert(n, mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.String(cc)}}); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
}
