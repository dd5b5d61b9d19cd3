package etcdstore

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Embedded is a running single-member etcd server.
type Embedded struct {
	etcd      *embed.Etcd
	endpoints []string
	lock      *os.File
}

// StartEmbedded starts a single-member etcd server and waits until it
// serves clients (or ctx / cfg.StartTimeout ends). Close stops it.
func StartEmbedded(ctx context.Context, cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("start embedded etcd: data dir is empty")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	// etcd blocks forever on a data dir another server has open: fail
	// fast instead (and before touching that server's sockets).
	lock, err := os.OpenFile(filepath.Join(cfg.DataDir, "genie-etcd.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("start embedded etcd: data dir %s is in use by another server: %w", cfg.DataDir, err)
	}
	ok := false
	defer func() {
		if !ok {
			lock.Close()
		}
	}()
	if cfg.ClientURL == "" {
		cfg.ClientURL = "unix://" + filepath.Join(cfg.DataDir, "etcd.sock")
	}
	if cfg.PeerURL == "" {
		cfg.PeerURL = "unix://" + filepath.Join(cfg.DataDir, "peer.sock")
	}
	if cfg.Name == "" {
		cfg.Name = "genie"
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = time.Minute
	}
	curl, err := parseListenURL(cfg.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: client url: %w", err)
	}
	purl, err := parseListenURL(cfg.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: peer url: %w", err)
	}
	for _, u := range []*url.URL{curl, purl} {
		if u.Scheme == "unix" {
			if err := os.MkdirAll(filepath.Dir(u.Path), 0o755); err != nil {
				return nil, fmt.Errorf("start embedded etcd: socket dir: %w", err)
			}
		}
	}

	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.DataDir
	ec.ListenClientUrls = []url.URL{*curl}
	ec.AdvertiseClientUrls = []url.URL{*curl}
	ec.ListenPeerUrls = []url.URL{*purl}
	ec.AdvertisePeerUrls = []url.URL{*purl}
	ec.InitialCluster = cfg.Name + "=" + purl.String()
	ec.InitialClusterToken = "genie-" + cfg.Name
	ec.LogLevel = "warn"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zapLogger(cfg.Logger, "etcd-server"))
	ec.EnableGRPCGateway = false
	ec.Metrics = "basic"
	// Keep history bounded: compact revisions older than one hour.
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = "1h"
	// The CLI and agents share this server; a single member needs no
	// reconfiguration checks.
	ec.StrictReconfigCheck = false
	if err := ec.Validate(); err != nil {
		return nil, fmt.Errorf("start embedded etcd: config: %w", err)
	}

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.DataDir, err)
	}
	timer := time.NewTimer(cfg.StartTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.DataDir, err)
	case <-timer.C:
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: not ready after %s", cfg.DataDir, cfg.StartTimeout)
	case <-ctx.Done():
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.DataDir, ctx.Err())
	}

	ok = true
	emb := &Embedded{etcd: e, lock: lock}
	for _, l := range e.Clients {
		a := l.Addr()
		switch a.Network() {
		case "unix":
			emb.endpoints = append(emb.endpoints, "unix://"+a.String())
		default:
			emb.endpoints = append(emb.endpoints, "http://"+a.String())
		}
	}
	return emb, nil
}

// Endpoints returns the client endpoints to pass to New, e.g.
// "unix:///run/genie/etcd.sock" or "http://127.0.0.1:40123" (the real
// port when the config asked for port 0).
func (e *Embedded) Endpoints() []string { return append([]string(nil), e.endpoints...) }

// Err reports a fatal server error after start (the channel never closes
// while the server runs).
func (e *Embedded) Err() <-chan error { return e.etcd.Err() }

// Close stops the server and removes its sockets. Safe to call twice.
func (e *Embedded) Close() error {
	if e == nil || e.etcd == nil {
		return nil
	}
	e.etcd.Close()
	e.etcd = nil
	return e.lock.Close()
}

// parseListenURL accepts unix:///abs/path, unix:/abs/path and
// http://host:port.
func parseListenURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", s, err)
	}
	switch u.Scheme {
	case "unix":
		p := u.Host + u.Path
		if u.Opaque != "" {
			p = u.Opaque
		}
		if !strings.HasPrefix(p, "/") {
			return nil, fmt.Errorf("%q: socket path must be absolute", s)
		}
		if len(p) > 107 {
			return nil, fmt.Errorf("%q: socket path longer than 107 bytes", s)
		}
		return &url.URL{Scheme: "unix", Path: p}, nil
	case "http":
		if u.Port() == "" {
			return nil, fmt.Errorf("%q: no port", s)
		}
		return &url.URL{Scheme: "http", Host: u.Host}, nil
	}
	return nil, fmt.Errorf("%q: scheme must be unix or http", s)
}

// zapLogger returns a warn-level zap logger forwarding to lg (nil: none).
func zapLogger(lg *slog.Logger, component string) *zap.Logger {
	if lg == nil {
		return zap.NewNop()
	}
	return zap.New(&slogCore{lg: lg.With("component", component), level: zapcore.WarnLevel})
}

// slogCore is a zapcore.Core that forwards entries to a slog.Logger.
type slogCore struct {
	lg     *slog.Logger
	level  zapcore.Level
	fields []zapcore.Field
}

// Enabled reports whether level l is logged (warn and above).
func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= c.level }

// With returns a core that adds fs to every entry.
func (c *slogCore) With(fs []zapcore.Field) zapcore.Core {
	return &slogCore{lg: c.lg, level: c.level, fields: append(append([]zapcore.Field(nil), c.fields...), fs...)}
}

// Check adds c to ce if the entry's level is enabled.
func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

// Write forwards one entry and its fields to slog.
func (c *slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(append([]zapcore.Field(nil), c.fields...), fs...) {
		f.AddTo(enc)
	}
	attrs := make([]any, 0, 2*len(enc.Fields))
	for k, v := range enc.Fields {
		attrs = append(attrs, k, v)
	}
	lvl := slog.LevelWarn
	if e.Level >= zapcore.ErrorLevel {
		lvl = slog.LevelError
	}
	c.lg.Log(context.Background(), lvl, e.Message, attrs...)
	return nil
}

// Sync is a no-op: slog handlers write synchronously.
func (c *slogCore) Sync() error { return nil }
