// Command passthru is the least work any exec-based meta-plugin can do: it
// reads its config, hands the embedded "delegate" config to that plugin's
// binary (found on CNI_PATH) with the same environment, and relays its output
// and exit status. BenchmarkAddDel uses it as the floor that genie's own
// overhead is measured against. Standard library only, to keep it minimal.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

func main() {
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	var conf struct {
		Delegate json.RawMessage `json:"delegate"`
	}
	var plugin struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(in, &conf); err != nil {
		fail(err)
	}
	if err := json.Unmarshal(conf.Delegate, &plugin); err != nil {
		fail(err)
	}
	for _, dir := range filepath.SplitList(os.Getenv("CNI_PATH")) {
		path := filepath.Join(dir, plugin.Type)
		if _, err := os.Stat(path); err != nil {
			continue
		}
		cmd := exec.Command(path)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(conf.Delegate), os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				os.Exit(ee.ExitCode())
			}
			fail(err)
		}
		return
	}
	fail(fmt.Errorf("plugin %q not found on CNI_PATH", plugin.Type))
}

func fail(err error) {
	fmt.Printf(`{"cniVersion":"1.0.0","code":999,"msg":%q}`, err.Error())
	os.Exit(1)
}
