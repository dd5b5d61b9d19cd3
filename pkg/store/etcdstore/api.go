package etcdstore

import (
	"log/slog"
	"time"
)

// EmbeddedConfig configures an embedded single-member etcd server.
type EmbeddedConfig struct {
	// DataDir holds etcd's data (created if missing). Required.
	DataDir string
	// ClientURL is where clients connect: "unix:///run/genie/etcd.sock"
	// (a filesystem socket, reachable from every network namespace) or
	// "http://127.0.0.1:2379"; port 0 picks a free port. Empty means
	// "unix://<DataDir>/etcd.sock".
	ClientURL string
	// PeerURL is the raft peer listener; empty means a unix socket in
	// DataDir (a single member never dials it).
	PeerURL string
	// Name is the member name; empty means "genie".
	Name string
	// Logger receives etcd's warnings and errors (etcd is kept at warn
	// level). Nil discards them.
	Logger *slog.Logger
	// StartTimeout bounds the wait for the server to be ready; zero means
	// one minute.
	StartTimeout time.Duration
}

// Options configures a client Store.
type Options struct {
	// DialTimeout bounds the initial connection; zero means 5s.
	DialTimeout time.Duration
	// Prefix is the key prefix of all objects; empty means "/genie/v1".
	// Tests use a unique prefix to share one etcd.
	Prefix string
	// Logger receives client warnings; nil discards them.
	Logger *slog.Logger
	// DirectoryShards is the shard count of the endpoint directory's
	// keys (a power of two; zero means directory.DefaultShards). Every
	// writer of a cluster must use the same count; changing it needs the
	// directory keys rewritten (see doc.go).
	DirectoryShards int
}
