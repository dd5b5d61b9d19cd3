package k8s

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"

	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
)

// watchProxy is an HTTPS reverse proxy to the API server, listening on
// 127.0.0.1 inside a node netns (like relay, but terminating TLS with a
// certificate of its own CA), that records the VPC set of every watch of
// VPC endpoints it forwards: what the API server was asked to watch,
// whatever the agent logs.
type watchProxy struct {
	l     net.Listener
	srv   *http.Server
	caPEM []byte

	mu sync.Mutex
	// watches are the genie.cni.io/vpc values of each endpoint watch.
	watches [][]string
}

func startWatchProxy(t *testing.T, node ns.NetNS, target string, targetCA []byte) *watchProxy {
	t.Helper()
	cert, caPEM := selfSignedLoopback(t)
	up, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(targetCA)
	rp := httputil.NewSingleHostReverseProxy(up)
	rp.FlushInterval = -1 // watch streams
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: false}
	p := &watchProxy{caPEM: caPEM}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("watch") == "true" && strings.HasSuffix(r.URL.Path, "/vpcendpoints") {
			p.record(t, q.Get("labelSelector"))
		}
		rp.ServeHTTP(w, r)
	})
	err = node.Do(func(ns.NetNS) error {
		var err error
		p.l, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		t.Fatalf("watch proxy listen in node netns: %v", err)
	}
	p.srv = &http.Server{Handler: handler, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ReadHeaderTimeout: 10 * time.Second}
	go p.srv.ServeTLS(p.l, "", "")
	t.Cleanup(func() { p.srv.Close() })
	return p
}

func (p *watchProxy) url() string { return "https://" + p.l.Addr().String() }

func (p *watchProxy) record(t *testing.T, sel string) {
	var vpcs []string
	if s, err := labels.Parse(sel); err == nil {
		reqs, _ := s.Requirements()
		for _, r := range reqs {
			if r.Key() == kubestore.LabelVPC && (r.Operator() == selection.In || r.Operator() == selection.Equals) {
				vpcs = append(vpcs, r.Values().List()...)
			}
		}
	} else {
		t.Errorf("endpoint watch with an unparsable label selector %q: %v", sel, err)
	}
	p.mu.Lock()
	p.watches = append(p.watches, vpcs)
	p.mu.Unlock()
}

// watched returns the largest VPC set of any endpoint watch (-1: none,
// 0: a watch of all VPCs) and the union of the VPCs watched.
func (p *watchProxy) watched() (int, map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	most, all := -1, map[string]bool{}
	for _, w := range p.watches {
		most = max(most, len(w))
		for _, v := range w {
			all[v] = true
		}
	}
	return most, all
}

// selfSignedLoopback returns a certificate for 127.0.0.1 and its PEM (it
// is its own CA).
func selfSignedLoopback(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "genie-test-watch-proxy"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	cert, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	return cert, certPEM
}
