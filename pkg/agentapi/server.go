package agentapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// Backend is what the agent implements to serve the socket. Errors that are
// a *types.Error keep their code; any other error is reported as code 999
// with the error text as the message.
type Backend interface {
	Attach(ctx context.Context, req *AttachRequest) (*current.Result, error)
	Detach(ctx context.Context, req *DetachRequest) error
	Check(ctx context.Context, req *CheckRequest) error
	GC(ctx context.Context, req *GCRequest) (*GCResponse, error)
	Status(ctx context.Context) (*StatusResponse, error)
}

// Handler returns the HTTP handler serving b, and PathTrace if b is a
// Tracer.
func Handler(b Backend) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathAttach, serve(func(ctx context.Context, req *AttachRequest) (any, error) {
		if err := req.Validate(); err != nil {
			return nil, &types.Error{Code: types.ErrInvalidNetworkConfig, Msg: err.Error()}
		}
		res, err := b.Attach(ctx, req)
		if err != nil {
			return nil, err
		}
		return &AttachResponse{Result: res}, nil
	}))
	mux.HandleFunc("POST "+PathDetach, serve(func(ctx context.Context, req *DetachRequest) (any, error) {
		return nil, b.Detach(ctx, req)
	}))
	mux.HandleFunc("POST "+PathCheck, serve(func(ctx context.Context, req *CheckRequest) (any, error) {
		return nil, b.Check(ctx, req)
	}))
	mux.HandleFunc("POST "+PathGC, serve(func(ctx context.Context, req *GCRequest) (any, error) {
		return b.GC(ctx, req)
	}))
	mux.HandleFunc("POST "+PathStatus, serve(func(ctx context.Context, _ *struct{}) (any, error) {
		return b.Status(ctx)
	}))
	if t, ok := b.(Tracer); ok {
		mux.HandleFunc("POST "+PathTrace, serveTrace(t))
	}
	return mux
}

// Listen creates the unix socket at path (replacing a stale one left by a
// previous agent) with owner-only permissions.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating socket dir: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("restricting socket %s: %w", path, err)
	}
	return l, nil
}

func serve[Req any](fn func(context.Context, *Req) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req Req
		data, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err == nil && len(data) > 0 {
			err = json.Unmarshal(data, &req)
		}
		if err != nil {
			writeError(w, &types.Error{Code: types.ErrDecodingFailure, Msg: "decoding request: " + err.Error()})
			return
		}
		out, err := fn(r.Context(), &req)
		if err != nil {
			writeError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if out == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		_ = json.NewEncoder(w).Encode(out)
	}
}

func writeError(w http.ResponseWriter, err error) {
	var te *types.Error
	if !errors.As(err, &te) {
		te = &types.Error{Code: types.ErrInternal, Msg: err.Error()}
	}
	status := http.StatusInternalServerError
	if te.Code == types.ErrInvalidNetworkConfig || te.Code == types.ErrDecodingFailure || te.Code == types.ErrInvalidEnvironmentVariables {
		status = http.StatusBadRequest
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(te)
}
