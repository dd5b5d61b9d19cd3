package kubestore

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

// tokenFile authenticates requests with the bearer token in a file and
// picks up a rotated token at the next request. The kubelet rotates
// projected service-account tokens by replacing the file; client-go's own
// file token source re-reads it only once a minute and not on a 401, so a
// long-running agent would fail requests in between (an expired token is
// a top complaint of Multus users). A stat per request is the whole cost.
type tokenFile struct {
	path string
	base http.RoundTripper

	mu   sync.Mutex
	mod  time.Time
	size int64
	tok  string
}

// token returns the file's token, read again if the file changed (or if
// force is set). A file that cannot be read keeps the last token.
func (t *tokenFile) token(force bool) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	fi, err := os.Stat(t.path)
	if err != nil || (!force && fi.ModTime().Equal(t.mod) && fi.Size() == t.size && t.tok != "") {
		return t.tok
	}
	b, err := os.ReadFile(t.path)
	if err != nil {
		return t.tok
	}
	if tok := string(bytes.TrimSpace(b)); tok != "" {
		t.tok, t.mod, t.size = tok, fi.ModTime(), fi.Size()
	}
	return t.tok
}

func withToken(req *http.Request, tok string) *http.Request {
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return r
}

// RoundTrip implements http.RoundTripper. A 401 sent with a token that
// is no longer the file's is sent once more with the new token.
func (t *tokenFile) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("Authorization") != "" {
		return t.base.RoundTrip(req)
	}
	tok := t.token(false)
	resp, err := t.base.RoundTrip(withToken(req, tok))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	fresh := t.token(true)
	if fresh == tok || (req.Body != nil && req.GetBody == nil) {
		return resp, nil
	}
	again := withToken(req, fresh)
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return resp, nil
		}
		again.Body = body
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return t.base.RoundTrip(again)
}
