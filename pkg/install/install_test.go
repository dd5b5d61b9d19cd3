package install

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cni-genie/cni-genie/pkg/genie"
)

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func lookBin(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("needs %s: %v", name, err)
	}
	return p
}

// TestCopyBinaryWhileExecuting replaces the binary while the old one runs.
// Writing in place fails with ETXTBSY (checked first, so the test proves
// the condition is real); CopyBinary succeeds, the running process is
// unharmed and the new file is complete.
func TestCopyBinaryWhileExecuting(t *testing.T) {
	dir := t.TempDir()
	sleep, echo := lookBin(t, "sleep"), lookBin(t, "echo")
	if _, err := CopyBinary(sleep, dir, BinaryName); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, BinaryName)
	cmd := exec.Command(dst, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	newBin, _ := os.ReadFile(echo)
	if err := os.WriteFile(dst, newBin, 0o755); !errors.Is(err, syscall.ETXTBSY) {
		t.Fatalf("writing a running binary in place: got %v, want ETXTBSY (the failure CopyBinary avoids)", err)
	}
	changed, err := CopyBinary(echo, dir, BinaryName)
	if err != nil || !changed {
		t.Fatalf("CopyBinary over a running binary: changed=%v err=%v", changed, err)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, newBin) {
		t.Fatal("installed binary differs from the source")
	}
	if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o755 {
		t.Fatalf("mode %v, want 0755", fi.Mode().Perm())
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("old binary's process died: %v", err)
	}
	if out, err := exec.Command(dst, "hello").Output(); err != nil || string(out) != "hello\n" {
		t.Fatalf("new binary: %q %v", out, err)
	}
	if changed, err := CopyBinary(echo, dir, BinaryName); err != nil || changed {
		t.Fatalf("identical binary rewritten: changed=%v err=%v", changed, err)
	}
	assertNoTemps(t, dir)
}

// TestCopyBinaryConcurrentExec execs the binary continuously from another
// process (as the runtime would) while it is replaced back and forth: every
// exec must run a complete binary. (The execs run in a child shell: a fork
// from this process while it holds the temp file open for writing would
// inherit that descriptor and make the child's exec fail with ETXTBSY,
// golang/go#22315, which the runtime never sees.)
func TestCopyBinaryConcurrentExec(t *testing.T) {
	dir := t.TempDir()
	bins := []string{lookBin(t, "true"), lookBin(t, "echo")}
	if _, err := CopyBinary(bins[0], dir, BinaryName); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, BinaryName)
	stop := filepath.Join(dir, "stop")
	loop := exec.Command(lookBin(t, "sh"), "-c", `n=0; f=0; while [ ! -e "$2" ]; do "$1" x >/dev/null 2>&1 || f=$((f+1)); n=$((n+1)); done; echo "$n $f"`, "sh", dst, stop)
	var out bytes.Buffer
	loop.Stdout = &out
	if err := loop.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	var replaceErr error
	for i := range 200 {
		if _, replaceErr = CopyBinary(bins[(i+1)%2], dir, BinaryName); replaceErr != nil {
			break
		}
	}
	writeFile(t, stop, "")
	if err := loop.Wait(); err != nil {
		t.Fatal(err)
	}
	if replaceErr != nil {
		t.Fatal(replaceErr)
	}
	var runs, fails int
	if _, err := fmt.Sscan(out.String(), &runs, &fails); err != nil || runs == 0 {
		t.Fatalf("exec loop output %q: %v", out.String(), err)
	}
	if fails > 0 {
		t.Fatalf("%d of %d execs failed while the binary was replaced", fails, runs)
	}
	t.Logf("%d execs during 200 replacements, none failed", runs)
	assertNoTemps(t, dir)
}

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

const bridgeConf = `{"cniVersion": "1.0.0", "name": "cluster", "plugins": [
  {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.244.0.0/24"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "bandwidth", "capabilities": {"bandwidth": true, "ignored": false}}]}`

// genieConf decodes genie's plugin entry of the conflist at path the way
// the plugin itself will.
func genieConf(t *testing.T, path string) (*libcni.NetworkConfigList, *genie.NetConf) {
	t.Helper()
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		t.Fatalf("runtime cannot load %s: %v", path, err)
	}
	if len(list.Plugins) != 1 || list.Plugins[0].Network.Type != genie.PluginType {
		t.Fatalf("plugins: %+v", list.Plugins)
	}
	nc, err := genie.ParseConfig(list.Plugins[0].Bytes, "")
	if err != nil {
		t.Fatalf("genie cannot parse its conf: %v", err)
	}
	return list, nc
}

func TestWriteConflistWrapsDefault(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "10-cluster.conflist"), bridgeConf)
	writeFile(t, filepath.Join(dir, "20-other.conf"), `{"cniVersion": "1.0.0", "name": "other", "type": "ptp"}`)
	writeFile(t, filepath.Join(dir, "05-broken.conflist"), `{not json`)
	o := ConfOptions{ConfDir: dir, Kubeconfig: "/etc/cni/net.d/genie.kubeconfig", LogLevel: "info"}
	w, changed, err := WriteConflist(o)
	if err != nil || !changed {
		t.Fatalf("changed=%v err=%v", changed, err)
	}
	if w.Name != "cluster" || filepath.Base(w.File) != "10-cluster.conflist" {
		t.Fatalf("wrapped %+v, want cluster from 10-cluster.conflist", w)
	}
	list, nc := genieConf(t, filepath.Join(dir, ConfName))
	if list.Name != "genie" || list.CNIVersion != ConfCNIVersion {
		t.Fatalf("list %s %s", list.Name, list.CNIVersion)
	}
	if len(nc.DefaultNetworks) != 1 || nc.DefaultNetworks[0] != "cluster" || nc.Kubeconfig != o.Kubeconfig || nc.LogLevel != "info" {
		t.Fatalf("genie conf: %+v", nc)
	}
	caps := list.Plugins[0].Network.Capabilities
	for _, c := range []string{"portMappings", "bandwidth", "io.kubernetes.cri.pod-annotations"} {
		if !caps[c] {
			t.Errorf("capability %s not declared: %v", c, caps)
		}
	}
	if caps["ignored"] {
		t.Errorf("a capability the wrapped network turned off is declared")
	}
	// Re-installing must keep wrapping the same network, never genie itself.
	if w, changed, err := WriteConflist(o); err != nil || changed || w.Name != "cluster" {
		t.Fatalf("second install: wrapped %+v changed=%v err=%v", w, changed, err)
	}
	// The runtime's choice is genie's file.
	files, _ := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	sort.Strings(files)
	if filepath.Base(files[0]) != ConfName {
		t.Fatalf("runtime would load %s first", files[0])
	}
}

func TestWriteConflistSingleConfAndNamed(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "10-a.conf"), `{"cniVersion": "0.4.0", "name": "a", "type": "bridge", "capabilities": {"portMappings": true}}`)
	writeFile(t, filepath.Join(dir, "20-b.conflist"), strings.Replace(bridgeConf, `"cluster"`, `"b"`, 1))
	w, _, err := WriteConflist(ConfOptions{ConfDir: dir})
	if err != nil || w.Name != "a" || !w.Capabilities["portMappings"] {
		t.Fatalf("single conf: %+v %v", w, err)
	}
	w, _, err = WriteConflist(ConfOptions{ConfDir: dir, DefaultNetwork: "b"})
	if err != nil || w.Name != "b" || !w.Capabilities["bandwidth"] {
		t.Fatalf("named: %+v %v", w, err)
	}
	_, nc := genieConf(t, filepath.Join(dir, ConfName))
	if nc.DefaultNetworks[0] != "b" {
		t.Fatalf("defaultNetworks %v", nc.DefaultNetworks)
	}
	// A name genie resolves at call time (a NAD or VPC network).
	if w, _, err := WriteConflist(ConfOptions{ConfDir: dir, DefaultNetwork: "blue-web"}); err != nil || w.Name != "blue-web" || w.File != "" {
		t.Fatalf("nad name: %+v %v", w, err)
	}
}

func TestWriteConflistRefusals(t *testing.T) {
	empty := t.TempDir()
	if _, _, err := WriteConflist(ConfOptions{ConfDir: empty}); !errors.Is(err, ErrNoDefaultNetwork) {
		t.Fatalf("empty conf dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(empty, ConfName)); err == nil {
		t.Fatal("conflist written despite the error")
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "00-aaa.conflist"), bridgeConf)
	_, _, err := WriteConflist(ConfOptions{ConfDir: dir})
	if err == nil || !strings.Contains(err.Error(), "00-aaa.conflist") {
		t.Fatalf("a conf sorting first must be refused by name, got %v", err)
	}
	if _, _, err := WriteConflist(ConfOptions{ConfDir: dir, ConfName: "0-genie.conflist"}); err != nil {
		t.Fatalf("with a name sorting first: %v", err)
	}
}

type dirSnapshot map[string]string

func snapshot(t *testing.T, dirs ...string) dirSnapshot {
	t.Helper()
	s := dirSnapshot{}
	for _, d := range dirs {
		filepath.Walk(d, func(p string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				b, _ := os.ReadFile(p)
				s[p] = fi.Mode().String() + ":" + string(b)
			}
			return nil
		})
	}
	return s
}

// TestUninstallLeavesOthers installs over a populated node and uninstalls:
// every other file is byte-for-byte what it was, genie's are gone.
func TestUninstallLeavesOthers(t *testing.T) {
	root := t.TempDir()
	bin, conf, state := filepath.Join(root, "bin"), filepath.Join(root, "net.d"), filepath.Join(root, "state")
	for _, d := range []string{bin, conf, state} {
		os.MkdirAll(d, 0o755)
	}
	writeFile(t, filepath.Join(conf, "10-cluster.conflist"), bridgeConf)
	writeFile(t, filepath.Join(conf, "multus.kubeconfig"), "someone else's")
	writeFile(t, filepath.Join(conf, "99-loopback.conf"), `{"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}`)
	writeFile(t, filepath.Join(bin, "bridge"), "bridge binary")
	writeFile(t, filepath.Join(bin, "genie-other"), "not genie")
	writeFile(t, filepath.Join(state, "record"), "attachment")
	before := snapshot(t, bin, conf)

	tok, ca := filepath.Join(root, "token"), filepath.Join(root, "ca.crt")
	writeFile(t, tok, "tok-1\n")
	writeFile(t, ca, "-----BEGIN CERTIFICATE-----\n")
	o := Options{Source: lookBin(t, "true"), BinDir: bin, ConfDir: conf, StateDir: state,
		Kubeconfig: &KubeconfigSource{Server: "https://10.0.0.1:443", TokenFile: tok, CAFile: ca}}
	if err := Install(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(bin, BinaryName), filepath.Join(conf, ConfName), filepath.Join(conf, KubeconfigName)} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("install did not write %s", p)
		}
	}
	if err := Uninstall(o); err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, bin, conf)
	if len(after) != len(before) {
		t.Fatalf("files after uninstall: %v, want %v", keys(after), keys(before))
	}
	for p, v := range before {
		if after[p] != v {
			t.Errorf("%s changed or removed by install+uninstall", p)
		}
	}
	if _, err := os.Stat(filepath.Join(state, "record")); err != nil {
		t.Error("uninstall without purge removed the attachment records")
	}
	if err := Uninstall(o); err != nil {
		t.Fatalf("second uninstall: %v", err)
	}
	o.Purge = true
	if err := Uninstall(o); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(state); err == nil {
		t.Error("purge kept the state dir")
	}
	// A file of genie's name that is not genie's conflist is left alone.
	writeFile(t, filepath.Join(conf, ConfName), bridgeConf)
	if err := Uninstall(o); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(conf, ConfName)); err != nil {
		t.Error("uninstall removed a conflist that was not genie's")
	}
}

func keys(s dirSnapshot) []string {
	var k []string
	for p := range s {
		k = append(k, p)
	}
	sort.Strings(k)
	return k
}

// TestKubeconfigRefresh rotates the token and checks the plugin's
// kubeconfig follows within the interval, atomically and 0600.
func TestKubeconfigRefresh(t *testing.T) {
	dir := t.TempDir()
	tok, ca, kc := filepath.Join(dir, "token"), filepath.Join(dir, "ca.crt"), filepath.Join(dir, KubeconfigName)
	writeFile(t, tok, "first-token\n")
	writeFile(t, ca, "CA")
	t.Setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
	t.Setenv("KUBERNETES_SERVICE_PORT", "6443")
	src := KubeconfigSource{TokenFile: tok, CAFile: ca}
	if _, err := WriteKubeconfig(context.Background(), kc, src); err != nil {
		t.Fatal(err)
	}
	load := func() (server, token string) {
		cfg, err := clientcmd.BuildConfigFromFlags("", kc)
		if err != nil {
			t.Fatalf("load kubeconfig: %v", err)
		}
		return cfg.Host, cfg.BearerToken
	}
	if s, tk := load(); s != "https://[fd00::1]:6443" || tk != "first-token" {
		t.Fatalf("server %q token %q", s, tk)
	}
	if fi, _ := os.Stat(kc); fi.Mode().Perm() != 0o600 {
		t.Fatalf("kubeconfig mode %v", fi.Mode().Perm())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	refreshed := make(chan struct{}, 8)
	go RefreshKubeconfig(ctx, kc, src, 20*time.Millisecond, func() { refreshed <- struct{}{} }, func(err error) { t.Error(err) })
	writeFile(t, tok+".new", "second-token")
	os.Rename(tok+".new", tok) // the way kubelet swaps a projected token
	select {
	case <-refreshed:
	case <-time.After(5 * time.Second):
		t.Fatal("kubeconfig not refreshed after the token rotated")
	}
	if _, tk := load(); tk != "second-token" {
		t.Fatalf("token after refresh %q", tk)
	}
	select {
	case <-refreshed:
		t.Fatal("refreshed again without a change")
	case <-time.After(100 * time.Millisecond):
	}
	assertNoTemps(t, dir)
}

func TestKubeconfigErrors(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := BuildKubeconfig(context.Background(), KubeconfigSource{}); err == nil || !strings.Contains(err.Error(), "KUBERNETES_SERVICE_HOST") {
		t.Fatalf("no server: %v", err)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "t"), "  \n")
	if _, err := BuildKubeconfig(context.Background(), KubeconfigSource{Server: "https://x", TokenFile: filepath.Join(dir, "t")}); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty token: %v", err)
	}
}

func TestMain_(t *testing.T) {
	root := t.TempDir()
	bin, conf := filepath.Join(root, "bin"), filepath.Join(root, "net.d")
	os.MkdirAll(conf, 0o755)
	writeFile(t, filepath.Join(conf, "10-cluster.conflist"), bridgeConf)
	var out, errb bytes.Buffer
	args := []string{"--source", lookBin(t, "true"), "--bin-dir", bin, "--conf-dir", conf, "--no-kubeconfig"}
	if code := Main(append([]string{"install"}, args...), &out, &errb); code != 0 {
		t.Fatalf("install exit %d: %s", code, errb.String())
	}
	data, err := os.ReadFile(filepath.Join(conf, ConfName))
	if err != nil {
		t.Fatal(err)
	}
	var l map[string]any
	if err := json.Unmarshal(data, &l); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(conf, KubeconfigName)); err == nil {
		t.Error("--no-kubeconfig wrote a kubeconfig")
	}
	if p := l["plugins"].([]any)[0].(map[string]any); p["attachParallelism"] != nil {
		t.Errorf("attachParallelism written without --attach-parallelism: %v", p)
	}
	if code := Main(append([]string{"uninstall"}, args...), &out, &errb); code != 0 {
		t.Fatalf("uninstall exit %d: %s", code, errb.String())
	}
	if _, err := os.Stat(filepath.Join(conf, ConfName)); err == nil {
		t.Error("uninstall kept the conflist")
	}
	if code := Main(append([]string{"check-uninstalled"}, args...), &out, &errb); code != 0 {
		t.Errorf("check-uninstalled after uninstall: exit %d: %s", code, errb.String())
	}
	if code := Main(append([]string{"install"}, args...), &out, &errb); code != 0 {
		t.Fatalf("reinstall exit %d: %s", code, errb.String())
	}
	if code := Main(append([]string{"check-uninstalled"}, args...), &out, &errb); code != 1 {
		t.Errorf("check-uninstalled while installed: exit %d", code)
	}
	if code := Main(append([]string{"install", "--attach-parallelism", "2"}, args...), &out, &errb); code != 0 {
		t.Fatalf("install --attach-parallelism 2: exit %d: %s", code, errb.String())
	}
	if _, nc := genieConf(t, filepath.Join(conf, ConfName)); nc.AttachParallelism != 2 {
		t.Errorf("--attach-parallelism 2 gave attachParallelism %d", nc.AttachParallelism)
	}
	if code := Main(append([]string{"install", "--attach-parallelism", "-1"}, args...), &out, &errb); code != 2 ||
		!strings.Contains(errb.String(), "--attach-parallelism -1") {
		t.Errorf("--attach-parallelism -1: exit %d, %s", code, errb.String())
	}
	if code := Main([]string{"frobnicate"}, &out, &errb); code != 2 {
		t.Errorf("unknown command exit %d", code)
	}
	if code := Main(append([]string{"install"}, "--conf-dir", t.TempDir(), "--bin-dir", bin, "--source", lookBin(t, "true"), "--no-kubeconfig"), &out, &errb); code != 1 || !strings.Contains(errb.String(), "no default network") {
		t.Errorf("install into an empty conf dir: exit %d, %s", code, errb.String())
	}
}
