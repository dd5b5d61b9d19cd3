// Package proc runs the child processes of the test harnesses
// (pkg/testutil/kubeapi, pkg/testutil/kubenode): each in its own process
// group with Pdeathsig, so it dies with the test process, logging to a file
// whose last lines go into error messages.
//
// Pdeathsig fires when the thread that created the child exits, not the
// process, and the Go runtime retires threads at will: every start
// therefore runs on one locked OS thread that lives as long as the
// harness (Spawner).
package proc

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Spawner starts processes from one OS thread that lives until Close.
type Spawner struct {
	reqs chan func()
	once sync.Once
}

// NewSpawner starts the spawning thread.
func NewSpawner() *Spawner {
	s := &Spawner{reqs: make(chan func())}
	go func() {
		runtime.LockOSThread()
		for f := range s.reqs {
			f()
		}
		// Children are dead by now; give the thread back.
		runtime.UnlockOSThread()
	}()
	return s
}

// Do runs f on the spawning thread and waits for it: for starts of
// processes that are not a Proc.
func (s *Spawner) Do(f func()) {
	done := make(chan struct{})
	s.reqs <- func() { f(); close(done) }
	<-done
}

// Close ends the spawning thread (idempotent). Call it after every child
// was killed.
func (s *Spawner) Close() { s.once.Do(func() { close(s.reqs) }) }

// Start starts cmd in its own process group with Pdeathsig, its output
// appended to logPath after a header line with the time and args.
func (s *Spawner) Start(name string, cmd *exec.Cmd, logPath string) (*Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	fmt.Fprintf(logf, "==== %s %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(cmd.Args[1:], " "))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	s.Do(func() { err = cmd.Start() })
	logf.Close() // the child holds its own copy
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, LogPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Proc is one child process with its log file.
type Proc struct {
	Name    string
	Cmd     *exec.Cmd
	LogPath string
	done    chan struct{}
	err     error
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the exit status; valid once Done is closed.
func (p *Proc) Err() error { return p.err }

// Pid is the process's pid, which is also its process group's id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Kill sends SIGTERM to the process group, SIGKILL after 10 s, waits for
// the process, then kills whatever is left in its group.
func (p *Proc) Kill() {
	pg := p.Pid()
	select {
	case <-p.done:
	default:
		syscall.Kill(-pg, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-pg, syscall.SIGKILL)
			<-p.done
		}
	}
	syscall.Kill(-pg, syscall.SIGKILL)
}

// Tail returns the last n lines of the process's log.
func (p *Proc) Tail(n int) string { return Tail(p.LogPath, n) }

// Tail returns the last n lines of the file at path (or the error opening it).
func Tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
