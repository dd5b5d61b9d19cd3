package install

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const usage = `genie-install puts the genie CNI plugin on this node and takes it off.

Usage:
  genie-install install   [flags]  copy genie, write its kubeconfig and 00-genie.conflist, exit
  genie-install run       [flags]  install, then keep the kubeconfig's token fresh until SIGTERM
                                   (leaves everything installed: the DaemonSet's container)
  genie-install uninstall [flags]  remove genie's conflist, kubeconfig and binary only
                                   (--wait: then sleep until SIGTERM, for a DaemonSet)
  genie-install check-uninstalled [flags]  exit 0 when none of those files is left (a probe)

Flags:
`

// Main runs genie-install with args and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		newFlags(stderr, &Options{}, new(bool), new(bool)).PrintDefaults()
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd := args[0]
	var o Options
	var noKube, wait bool
	fs := newFlags(stderr, &o, &noKube, &wait)
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if o.Conf.AttachParallelism < 0 {
		fmt.Fprintf(stderr, "genie-install: --attach-parallelism %d: want 1 or more (0: genie's default)\n", o.Conf.AttachParallelism)
		return 2
	}
	o.Log = slog.New(slog.NewTextHandler(stderr, nil)).With("cmd", cmd)
	if noKube {
		o.Kubeconfig = nil
	} else if pluginSA != "" && (cmd == "install" || cmd == "run") {
		r, err := newRequester(o.Kubeconfig, pluginSA)
		if err != nil {
			fmt.Fprintln(stderr, "genie-install:", err)
			return 1
		}
		r.Expiration = tokenExpiration
		o.Kubeconfig.Requester = r
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch cmd {
	case "install":
		err = Install(ctx, o)
	case "run":
		err = Run(ctx, o)
	case "uninstall":
		err = Uninstall(o)
		if err == nil && wait {
			<-ctx.Done()
		}
	case "check-uninstalled":
		err = CheckUninstalled(o)
	default:
		fmt.Fprintf(stderr, "genie-install: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "genie-install:", err)
		return 1
	}
	return 0
}

var (
	pluginSA        string
	tokenExpiration time.Duration
)

// newRequester builds the TokenRequester of --plugin-service-account from
// the installer's own credentials and the downward-API environment.
func newRequester(src *KubeconfigSource, sa string) (*TokenRequester, error) {
	server, err := src.server()
	if err != nil {
		return nil, err
	}
	cfg := &rest.Config{Host: server, BearerTokenFile: src.TokenFile, TLSClientConfig: rest.TLSClientConfig{CAFile: src.CAFile}}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("plugin token: %w", err)
	}
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		b, err := os.ReadFile(ServiceAccountDir + "/namespace")
		if err != nil {
			return nil, fmt.Errorf("plugin token: no POD_NAMESPACE and %w", err)
		}
		ns = strings.TrimSpace(string(b))
	}
	return &TokenRequester{Client: cs, Namespace: ns, ServiceAccount: sa, NodeName: os.Getenv("NODE_NAME")}, nil
}

func newFlags(out io.Writer, o *Options, noKube, wait *bool) *flag.FlagSet {
	fs := flag.NewFlagSet("genie-install", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.Source, "source", "/usr/local/bin/genie", "the genie binary to install")
	fs.StringVar(&o.BinDir, "bin-dir", "/host/opt/cni/bin", "the host's CNI bin dir, as mounted here")
	fs.StringVar(&o.ConfDir, "conf-dir", "/host/etc/cni/net.d", "the host's CNI conf dir, as mounted here")
	fs.StringVar(&o.Conf.ConfName, "conf-name", ConfName, "genie's conflist file name (must sort before every other conf)")
	fs.StringVar(&o.Conf.DefaultNetwork, "default-network", "", "network pods get without a selection (default: the first other conf in the conf dir)")
	fs.StringVar(&o.Conf.HostConfDir, "host-conf-dir", "/etc/cni/net.d", "the conf dir as the runtime sees it (genie's confDir)")
	fs.StringVar(&o.Conf.Kubeconfig, "host-kubeconfig", "/etc/cni/net.d/"+KubeconfigName, "the kubeconfig path as the runtime sees it")
	fs.StringVar(&o.Conf.LogFile, "log-file", "", "genie's logFile (empty: stderr, which the runtime logs)")
	fs.StringVar(&o.Conf.LogLevel, "log-level", "", "genie's logLevel (debug, info, warn, error)")
	fs.StringVar(&o.Conf.AgentSocket, "agent-socket", "", "the node agent's socket (empty: genie's default)")
	fs.IntVar(&o.Conf.AttachParallelism, "attach-parallelism", 0, "genie's attachParallelism: how many networks of a pod are attached at once after the first; 1: one at a time, in order (0: genie's default)")
	fs.StringVar(&o.StateDir, "state-dir", "/host/var/lib/cni/genie", "genie's attachment records, removed by uninstall --purge")
	fs.BoolVar(&o.Purge, "purge", false, "uninstall: also remove genie's attachment records")
	fs.BoolVar(noKube, "no-kubeconfig", false, "write no kubeconfig (genie without Kubernetes)")
	fs.BoolVar(wait, "wait", false, "uninstall: sleep until SIGTERM afterwards")
	fs.DurationVar(&o.RefreshInterval, "refresh-interval", 30*time.Second, "run: how often the token is checked for rotation")
	fs.StringVar(&pluginSA, "plugin-service-account", "", "issue the plugin's token for this service account of the pod's namespace through TokenRequest, bound to this node (NODE_NAME); empty: the plugin uses --token-file as is")
	fs.DurationVar(&tokenExpiration, "token-expiration", time.Hour, "lifetime requested for the plugin's token (--plugin-service-account); renewed at half of it")
	src := &KubeconfigSource{}
	o.Kubeconfig = src
	fs.StringVar(&src.Server, "server", os.Getenv("GENIE_API_SERVER"), "API server URL for the plugin (default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)")
	fs.StringVar(&src.TokenFile, "token-file", DefaultTokenFile, "the service-account token the plugin's kubeconfig carries")
	fs.StringVar(&src.CAFile, "ca-file", DefaultCAFile, "the API server's CA")
	return fs
}
