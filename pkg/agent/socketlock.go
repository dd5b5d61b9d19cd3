package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// lockSocket takes an exclusive flock on path+".lock" (beside the
// socket) and writes this process's pid into it, before the socket is
// touched: agentapi.Listen removes a stale socket file, and without the
// lock a second genied given the same --socket would unlink the running
// agent's socket and take its place (the first agent keeps serving an
// unreachable file). The lock dies with the process, so a crashed agent
// leaves no stale lock behind. The returned func releases it.
func lockSocket(path string) (func(), error) {
	lp := path + ".lock"
	if err := os.MkdirAll(filepath.Dir(lp), 0o755); err != nil {
		return nil, fmt.Errorf("creating socket dir: %w", err)
	}
	f, err := os.OpenFile(lp, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening socket lock %s: %w", lp, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			who := "another agent"
			if b, rerr := os.ReadFile(lp); rerr == nil {
				if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
					who = fmt.Sprintf("another agent (pid %d)", pid)
				}
			}
			return nil, fmt.Errorf("socket %s is in use by %s: it holds %s; stop it or give this agent another --socket", path, who, lp)
		}
		return nil, fmt.Errorf("locking %s: %w", lp, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}
