package kubeapi

// EtcdURL returns the client URL of the server's etcd (http://127.0.0.1:<port>),
// for tests that inspect what the API server stores or compact its history.
func (s *Server) EtcdURL() string { return s.etcdURL }
