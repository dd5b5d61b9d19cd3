package kubeapi

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
)

// Environment variables the harness reads.
const (
	// EnvBinDir names the folder holding etcd and kube-apiserver.
	EnvBinDir = testenv.EnvBinDir
	// EnvRequire, when "1", turns missing binaries into test failures (CI).
	EnvRequire = "GENIE_REQUIRE_KUBE"
	// EnvKeep, when "1", keeps the temp dir (logs, etcd data) after Stop.
	EnvKeep = "GENIE_KUBEAPI_KEEP"
)

// ModulePath is the Go module whose root holds _output/bin and deploy/crds.
const ModulePath = testenv.ModulePath

// AdminUser is the user name of the admin token, a member of system:masters.
const AdminUser = "genie-test-admin"

// ErrBinariesMissing is returned by Start when etcd or kube-apiserver is not
// installed in the bin dir.
var ErrBinariesMissing = errors.New("etcd/kube-apiserver test binaries missing (run hack/build-test-bins.sh)")

// Options configures Start. The zero value is ready to use.
type Options struct {
	// BinDir holds etcd and kube-apiserver. Default: $GENIE_TEST_BINDIR,
	// else <module root>/_output/bin.
	BinDir string
	// StartTimeout bounds start-up to /readyz. Default 2 minutes (the
	// machine may be busy).
	StartTimeout time.Duration
	// Tokens are extra static tokens provisioned at start, besides the
	// admin token.
	Tokens []Token
	// ExtraArgs are appended to kube-apiserver's flags.
	ExtraArgs []string
	// Logf, if set, receives progress lines (e.g. testing.T.Logf).
	Logf func(format string, args ...any)
}

// Token is a static bearer token known to the API server.
type Token struct {
	Token  string
	User   string
	UID    string
	Groups []string
}

// Server is a running etcd + kube-apiserver pair.
type Server struct {
	// URL is the API server's base URL, https://127.0.0.1:<port>.
	URL string
	// AdminToken authenticates as AdminUser in system:masters.
	AdminToken string
	// CAData is the PEM CA certificate that signed the serving certificate.
	CAData []byte
	// Dir is the server's private temp dir (logs, data, certificates).
	Dir string
	// StartupTime is how long the last (re)start of kube-apiserver took to
	// report ready, etcd included on the first start.
	StartupTime time.Duration

	opts      Options
	pki       *pki
	etcdURL   string
	apiPort   int
	tokenFile string
	spawner   *spawner

	mu        sync.Mutex
	tokens    []Token
	etcd      *proc
	apiserver *proc
	stopped   bool
}

// Start runs etcd and kube-apiserver and waits until /readyz answers 200.
// It returns an error wrapping ErrBinariesMissing when they are not built.
// The caller must call Stop.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 2 * time.Minute
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.BinDir == "" {
		d, err := DefaultBinDir()
		if err != nil {
			return nil, err
		}
		opts.BinDir = d
	}
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if fi, err := os.Stat(filepath.Join(opts.BinDir, b)); err != nil || fi.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("%w: %s not found in %s", ErrBinariesMissing, b, opts.BinDir)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()

	dir, err := os.MkdirTemp("", "genie-kubeapi-")
	if err != nil {
		return nil, fmt.Errorf("create temp dir: %w", err)
	}
	s := &Server{Dir: dir, opts: opts, spawner: newSpawner()}
	ok := false
	defer func() {
		if !ok {
			s.Stop()
		}
	}()

	begin := time.Now()
	if s.pki, err = writePKI(dir); err != nil {
		return nil, err
	}
	s.CAData = s.pki.caPEM
	s.AdminToken = randomToken()
	s.tokens = append([]Token{{Token: s.AdminToken, User: AdminUser, UID: AdminUser, Groups: []string{"system:masters"}}}, opts.Tokens...)
	s.tokenFile = filepath.Join(dir, "tokens.csv")
	if err := s.writeTokenFile(); err != nil {
		return nil, err
	}

	// Free ports are probed, then bound by the children: another process may
	// take one in between, so a bind failure retries with new ports.
	for attempt := 1; ; attempt++ {
		err = s.startEtcd(ctx)
		if err == nil {
			break
		}
		if attempt == 3 || !errors.Is(err, errPortInUse) {
			return nil, err
		}
	}
	for attempt := 1; ; attempt++ {
		ports, perr := freePorts(1)
		if perr != nil {
			return nil, perr
		}
		s.apiPort = ports[0]
		s.URL = "https://127.0.0.1:" + strconv.Itoa(s.apiPort)
		err = s.startAPIServer(ctx)
		if err == nil {
			break
		}
		if attempt == 3 || !errors.Is(err, errPortInUse) {
			return nil, err
		}
	}
	s.StartupTime = time.Since(begin)
	opts.Logf("kubeapi: %s ready in %v (dir %s)", s.URL, s.StartupTime.Round(time.Millisecond), dir)
	ok = true
	return s, nil
}

// DefaultBinDir is $GENIE_TEST_BINDIR, else <module root>/_output/bin.
func DefaultBinDir() (string, error) {
	if d := os.Getenv(EnvBinDir); d != "" {
		return d, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "_output", "bin"), nil
}

// ModuleRoot finds the root of the cni-genie module by walking up from the
// working directory (go test runs in the package directory).
func ModuleRoot() (string, error) { return testenv.FindModuleRoot() }

var errPortInUse = errors.New("port already in use")

func (s *Server) startEtcd(ctx context.Context) error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	args := []string{
		"--name", "default",
		"--data-dir", filepath.Join(s.Dir, "etcd-data"),
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "default=" + peer,
		"--unsafe-no-fsync",
		"--log-level", "warn",
	}
	p, err := s.spawn("etcd", args)
	if err != nil {
		return err
	}
	s.etcd = p
	s.etcdURL = client
	hc := &http.Client{Timeout: 2 * time.Second}
	err = poll(ctx, p, func() bool {
		resp, err := hc.Get(client + "/health")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"health":"true"`)
	})
	if err != nil {
		p.kill()
		return s.startupError("etcd", p, err)
	}
	return nil
}

func (s *Server) apiServerArgs() []string {
	args := []string{
		"--etcd-servers", s.etcdURL,
		"--bind-address", "127.0.0.1",
		"--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(s.apiPort),
		"--cert-dir", filepath.Join(s.Dir, "certs"),
		"--tls-cert-file", s.pki.certFile,
		"--tls-private-key-file", s.pki.keyFile,
		"--token-auth-file", s.tokenFile,
		"--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", s.pki.saKeyFile,
		"--service-account-signing-key-file", s.pki.saKeyFile,
		"--service-cluster-ip-range", "10.0.0.0/24",
		"--disable-admission-plugins", "ServiceAccount",
		"--endpoint-reconciler-type", "none",
		"--allow-privileged=true",
		"--profiling=false",
	}
	return append(args, s.opts.ExtraArgs...)
}

// startAPIServer starts kube-apiserver and waits for /readyz. Callers hold
// s.mu, or own s exclusively (during Start).
func (s *Server) startAPIServer(ctx context.Context) error {
	begin := time.Now()
	p, err := s.spawn("kube-apiserver", s.apiServerArgs())
	if err != nil {
		return err
	}
	s.apiserver = p
	hc, err := s.httpClient()
	if err != nil {
		return err
	}
	err = poll(ctx, p, func() bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+s.AdminToken)
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		p.kill()
		return s.startupError("kube-apiserver", p, err)
	}
	s.StartupTime = time.Since(begin)
	return nil
}

func (s *Server) startupError(name string, p *proc, err error) error {
	tail := p.tail(40)
	if strings.Contains(tail, "address already in use") {
		err = fmt.Errorf("%w: %w", errPortInUse, err)
	}
	return fmt.Errorf("start %s: %w\n--- last lines of %s ---\n%s", name, err, p.logPath, tail)
}

func (s *Server) httpClient() (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CAData) {
		return nil, errors.New("load test ca certificate")
	}
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}, nil
}

// poll calls ready every 100ms until it returns true, the process exits or
// ctx ends.
func poll(ctx context.Context, p *proc, ready func() bool) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if ready() {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("process exited early: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// RESTConfig returns a client config authenticated as the admin.
func (s *Server) RESTConfig() *rest.Config {
	return s.RESTConfigForToken(s.AdminToken)
}

// RESTConfigForToken returns a client config that authenticates with token.
func (s *Server) RESTConfigForToken(token string) *rest.Config {
	return &rest.Config{
		Host:            s.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: append([]byte(nil), s.CAData...)},
		QPS:             100,
		Burst:           200,
		Timeout:         30 * time.Second,
	}
}

// WriteKubeconfig writes a kubeconfig for this server that authenticates with
// token (the admin token if empty). The file is replaced atomically, the way
// a node agent rotating the token would do it.
func (s *Server) WriteKubeconfig(path, token string) error {
	if token == "" {
		token = s.AdminToken
	}
	return WriteKubeconfig(path, s.URL, s.CAData, token)
}

// WriteKubeconfig writes a kubeconfig for server (with the PEM CA caData)
// authenticating with token, replacing path atomically. Tests use it to point
// a client at an unreachable address.
func WriteKubeconfig(path, server string, caData []byte, token string) error {
	return writeKubeconfig(path, server, caData, &clientcmdapi.AuthInfo{Token: token})
}

// WriteKubeconfigTokenFile is WriteKubeconfig with the token read from
// tokenFile (the kubeconfig "tokenFile" key), the way a projected
// service-account token is usually wired: rotation rewrites only tokenFile.
func WriteKubeconfigTokenFile(path, server string, caData []byte, tokenFile string) error {
	return writeKubeconfig(path, server, caData, &clientcmdapi.AuthInfo{TokenFile: tokenFile})
}

func writeKubeconfig(path, server string, caData []byte, auth *clientcmdapi.AuthInfo) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caData}
	cfg.AuthInfos["test"] = auth
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test"}
	cfg.CurrentContext = "test"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("encode kubeconfig: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// Stop kills kube-apiserver and etcd (their whole process groups) and
// removes the temp dir (kept if GENIE_KUBEAPI_KEEP=1). It is idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	api, etcd := s.apiserver, s.etcd
	s.mu.Unlock()
	if api != nil {
		api.kill()
	}
	if etcd != nil {
		etcd.kill()
	}
	s.spawner.close()
	if os.Getenv(EnvKeep) == "1" {
		s.opts.Logf("kubeapi: keeping %s", s.Dir)
		return
	}
	os.RemoveAll(s.Dir)
}

func randomToken() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}

// freePorts returns n distinct free loopback TCP ports.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// proc is one child process with its log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // exit status, valid after done
}

// spawn starts a binary from the bin dir in its own process group, with
// Pdeathsig so it dies with the thread that created it.
func (s *Server) spawn(name string, args []string) (*proc, error) {
	return s.spawnAs(name, name, args)
}

// spawnAs is spawn with a log file named after logName.
func (s *Server) spawnAs(name, logName string, args []string) (*proc, error) {
	logPath := filepath.Join(s.Dir, logName+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	fmt.Fprintf(logf, "==== %s %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	cmd := exec.Command(filepath.Join(s.opts.BinDir, name), args...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	s.spawner.do(func() { err = cmd.Start() })
	logf.Close() // the child holds its own copy
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// kill sends SIGTERM to the process group, then SIGKILL after 10s, and waits.
func (p *proc) kill() {
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
		syscall.Kill(-pgid, syscall.SIGKILL) // leftovers in the group, if any
		return
	default:
	}
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
}

// tail returns the last n lines of the process log.
func (p *proc) tail(n int) string {
	f, err := os.Open(p.logPath)
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

// spawner runs process starts on one OS thread that lives as long as the
// Server: Pdeathsig fires when the creating thread exits, so children must
// not be created on a thread the Go runtime may retire.
type spawner struct {
	reqs chan func()
	once sync.Once
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan func())}
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

func (s *spawner) do(f func()) {
	done := make(chan struct{})
	s.reqs <- func() { f(); close(done) }
	<-done
}

func (s *spawner) close() { s.once.Do(func() { close(s.reqs) }) }
