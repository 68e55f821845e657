package wire

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// check runs `postfix check` and returns what it printed.
//
// postfix check reports through postlog(1), which writes to standard
// error only when that is a terminal; otherwise its warnings ("not owned
// by postfix", "group or other writable", a missing table) go to syslog
// or maillog_file alone, and the command prints nothing and exits 0 (seen
// on Postfix 3.7.11). So its standard error here is a pseudo-terminal.
func (p *postfix) check(ctx context.Context, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ptm, pts, err := openPTY()
	if err != nil {
		// No terminal to be had: what postfix check prints without one.
		return p.combined(ctx, timeout, p.postfix, "check")
	}
	defer ptm.Close()
	cmd := exec.CommandContext(ctx, p.postfix, p.withDir([]string{"check"})...)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, pts
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		pts.Close()
		return "", err
	}
	pts.Close() // the child has its own copy; reads end when it is gone
	var tty bytes.Buffer
	done := make(chan struct{})
	go func() {
		// A pseudo-terminal's reader gets EIO, not EOF, once every
		// writer has closed it.
		_, _ = io.Copy(&tty, ptm)
		close(done)
	}()
	err = cmd.Wait()
	select {
	case <-done:
	case <-time.After(time.Second):
		ptm.Close()
		<-done
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("no answer within %s", timeout)
	}
	out := strings.ReplaceAll(tty.String(), "\r\n", "\n") + stdout.String()
	return out, err
}

// openPTY opens a pseudo-terminal pair (pty(7)): the reading side and
// the terminal a child writes to.
func openPTY() (*os.File, *os.File, error) {
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	fd := int(ptm.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		ptm.Close()
		return nil, nil, err
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		ptm.Close()
		return nil, nil, err
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		ptm.Close()
		return nil, nil, err
	}
	return ptm, pts, nil
}
