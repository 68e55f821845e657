package postfix

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Params returns the values of Postfix's parameters names, in order, as
// `postconf -h` prints them for the instance whose configuration
// directory is dir ("" for Postfix's default): with $name references
// expanded when expand (-x). It fails with ErrNotInstalled when postconf
// cannot be found, and gives up after 10 s.
func Params(ctx context.Context, dir string, expand bool, names ...string) ([]string, error) {
	postconf, err := Command("postconf")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotInstalled, err)
	}
	args := []string{"-h"}
	if expand {
		args = append(args, "-x")
	}
	if dir != "" {
		args = append(args, "-c", dir)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := run(ctx, postconf, append(args, names...)...)
	if err != nil {
		return nil, err
	}
	values := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(values) != len(names) {
		return nil, fmt.Errorf("postconf -h %s: %d values", strings.Join(names, " "), len(values))
	}
	return values, nil
}
