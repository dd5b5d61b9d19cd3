package proc

import (
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStartKillTail(t *testing.T) {
	s := NewSpawner()
	defer s.Close()
	log := filepath.Join(t.TempDir(), "child.log")
	// The child leaves a grandchild in its group: Kill must end both.
	cmd := exec.Command("sh", "-c", "echo one; echo two; sleep 60 & echo three; wait")
	p, err := s.Start("child", cmd, log)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.HasSuffix(p.Tail(2), "two\nthree") {
		if time.Now().After(deadline) {
			t.Fatalf("log tail = %q, want it to end with two, three", p.Tail(2))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := p.Tail(3); !strings.HasPrefix(got, "one") {
		t.Errorf("Tail(3) = %q, want one, two, three", got)
	}
	if got := Tail(log, 10); !strings.HasPrefix(got, "==== ") || !strings.Contains(got, "-c echo one") {
		t.Errorf("log %q lacks the header line with the args", got)
	}
	p.Kill()
	select {
	case <-p.Done():
	default:
		t.Fatal("Kill returned before the process exited")
	}
	if p.Err() == nil {
		t.Error("a killed process reports a clean exit")
	}
	// The group is gone (once init reaped the killed grandchild):
	// signalling it fails.
	for deadline := time.Now().Add(5 * time.Second); syscall.Kill(-p.Pid(), 0) == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the process group still has members after Kill")
		}
	}
}

func TestStartError(t *testing.T) {
	s := NewSpawner()
	defer s.Close()
	if _, err := s.Start("nope", exec.Command("/nonexistent/binary"), filepath.Join(t.TempDir(), "l")); err == nil || !strings.Contains(err.Error(), "start nope") {
		t.Errorf("err = %v, want one naming the process", err)
	}
}
