package kubeapi

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// writeTokenFile writes the static token file kube-apiserver reads at start:
// token,user,uid,"group1,group2".
func (s *Server) writeTokenFile() error {
	var b strings.Builder
	w := csv.NewWriter(&b)
	for _, t := range s.tokens {
		uid := t.UID
		if uid == "" {
			uid = t.User
		}
		if err := w.Write([]string{t.Token, t.User, uid, strings.Join(t.Groups, ",")}); err != nil {
			return fmt.Errorf("encode token file: %w", err)
		}
	}
	w.Flush()
	if err := os.WriteFile(s.tokenFile, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	return nil
}

// AddToken adds a static bearer token for user (and groups). kube-apiserver
// reads its token file only at start, so this restarts kube-apiserver on the
// same address (etcd and all objects are kept); other tests using the server
// see a few seconds of connection errors. Prefer ServiceAccountToken for
// rotation tests on a shared server.
func (s *Server) AddToken(token, user string, groups ...string) error {
	if token == "" || user == "" || strings.ContainsAny(token, ",\n") {
		return errors.New("add token: token and user must be set, token without commas")
	}
	s.mu.Lock()
	s.tokens = append(s.tokens, Token{Token: token, User: user, Groups: groups})
	s.mu.Unlock()
	return s.reloadTokens("add token")
}

// RemoveToken revokes a static token (not the admin token), restarting
// kube-apiserver like AddToken.
func (s *Server) RemoveToken(token string) error {
	if token == s.AdminToken {
		return errors.New("remove token: refusing to remove the admin token")
	}
	s.mu.Lock()
	kept := s.tokens[:0:0]
	for _, t := range s.tokens {
		if t.Token != token {
			kept = append(kept, t)
		}
	}
	found := len(kept) != len(s.tokens)
	s.tokens = kept
	s.mu.Unlock()
	if !found {
		return errors.New("remove token: unknown token")
	}
	return s.reloadTokens("remove token")
}

func (s *Server) reloadTokens(step string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return fmt.Errorf("%s: server stopped", step)
	}
	if err := s.writeTokenFile(); err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	return s.restartLocked(step)
}

// Restart restarts kube-apiserver on the same address, keeping etcd.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("restart kube-apiserver: server stopped")
	}
	return s.restartLocked("restart kube-apiserver")
}

func (s *Server) restartLocked(step string) error {
	s.apiserver.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.StartTimeout)
	defer cancel()
	if err := s.startAPIServer(ctx); err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	s.opts.Logf("kubeapi: kube-apiserver restarted in %v", s.StartupTime.Round(time.Millisecond))
	return nil
}

// ServiceAccountToken returns a bearer token for the ServiceAccount
// namespace/name (created if missing), issued through the TokenRequest API and
// bound to a fresh Secret. revoke deletes that Secret, after which the API
// server rejects the token with 401: the way a real cluster invalidates a
// bound token, with no restart. The namespace must exist.
func (s *Server) ServiceAccountToken(ctx context.Context, namespace, name string) (token string, revoke func(context.Context) error, err error) {
	cs, err := kubernetes.NewForConfig(s.RESTConfig())
	if err != nil {
		return "", nil, fmt.Errorf("service account token %s/%s: %w", namespace, name, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", nil, fmt.Errorf("create service account %s/%s: %w", namespace, name, err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{GenerateName: name + "-token-binding-", Namespace: namespace},
		Type:       corev1.SecretTypeOpaque,
	}
	secret, err = cs.CoreV1().Secrets(namespace).Create(ctx, secret, metav1.CreateOptions{})
	if err != nil {
		return "", nil, fmt.Errorf("create binding secret for %s/%s: %w", namespace, name, err)
	}
	expiry := int64(3600)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &expiry,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: secret.Name, UID: secret.UID},
	}}
	tr, err = cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, tr, metav1.CreateOptions{})
	if err != nil {
		return "", nil, fmt.Errorf("request token for %s/%s: %w", namespace, name, err)
	}
	secretName := secret.Name
	revoke = func(ctx context.Context) error {
		err := cs.CoreV1().Secrets(namespace).Delete(ctx, secretName, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("revoke token of %s/%s: delete secret %s: %w", namespace, name, secretName, err)
		}
		return nil
	}
	return tr.Status.Token, revoke, nil
}
