package install

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// In-cluster service-account files, as mounted into the installer.
const (
	ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	DefaultTokenFile  = ServiceAccountDir + "/token"
	DefaultCAFile     = ServiceAccountDir + "/ca.crt"
)

// KubeconfigSource is where the plugin's credentials come from.
type KubeconfigSource struct {
	// Server is the API server URL the plugin uses from the host. Empty:
	// https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT.
	Server string
	// TokenFile and CAFile default to the installer's service account.
	// The plugin's token is TokenFile's unless Requester is set.
	TokenFile, CAFile string
	// Requester, if set, issues the plugin's token (a TokenRequest for
	// the plugin's own, less privileged service account) instead.
	Requester *TokenRequester
}

// server returns s.Server or the in-cluster address.
func (s KubeconfigSource) server() (string, error) {
	if s.Server != "" {
		return s.Server, nil
	}
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return "", fmt.Errorf("no API server address: KUBERNETES_SERVICE_HOST/PORT unset and no server given")
	}
	return "https://" + net.JoinHostPort(host, port), nil
}

// BuildKubeconfig returns a kubeconfig for the plugin that embeds the
// current token and CA from src.
func BuildKubeconfig(ctx context.Context, src KubeconfigSource) ([]byte, error) {
	server, err := src.server()
	if err != nil {
		return nil, fmt.Errorf("build kubeconfig: %w", err)
	}
	tokenFile, caFile := src.TokenFile, src.CAFile
	if tokenFile == "" {
		tokenFile = DefaultTokenFile
	}
	if caFile == "" {
		caFile = DefaultCAFile
	}
	var token []byte
	if src.Requester != nil {
		t, err := src.Requester.Token(ctx)
		if err != nil {
			return nil, fmt.Errorf("build kubeconfig: %w", err)
		}
		token = []byte(t)
	} else if token, err = os.ReadFile(tokenFile); err != nil {
		return nil, fmt.Errorf("build kubeconfig: read token: %w", err)
	}
	token = bytes.TrimSpace(token)
	if len(token) == 0 {
		return nil, fmt.Errorf("build kubeconfig: token file %s is empty", tokenFile)
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("build kubeconfig: read ca: %w", err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["genie"] = &clientcmdapi.AuthInfo{Token: string(token)}
	cfg.Contexts["genie"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "genie"}
	cfg.CurrentContext = "genie"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("build kubeconfig: encode: %w", err)
	}
	return data, nil
}

// WriteKubeconfig writes the plugin's kubeconfig to path (0600,
// atomically) from the current token; it reports whether the file changed.
func WriteKubeconfig(ctx context.Context, path string, src KubeconfigSource) (bool, error) {
	data, err := BuildKubeconfig(ctx, src)
	if err != nil {
		return false, err
	}
	if same, _ := sameContent(path, data); same {
		return false, nil
	}
	if err := writeAtomic(path, data, 0o600); err != nil {
		return false, fmt.Errorf("write kubeconfig: %w", err)
	}
	return true, nil
}

// RefreshKubeconfig rewrites path whenever the token or CA changes,
// checking every interval, until ctx ends. A failed refresh is reported
// to onErr (if set) and retried at the next tick; the old file stays.
func RefreshKubeconfig(ctx context.Context, path string, src KubeconfigSource, interval time.Duration, onChange func(), onErr func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := WriteKubeconfig(ctx, path, src)
		switch {
		case err != nil && onErr != nil:
			onErr(err)
		case changed && onChange != nil:
			onChange()
		}
	}
}
