package kubestore

import "time"

// SetVIPStaleAfter sets how old a VIP claim without its service must be
// before s collects it.
func SetVIPStaleAfter(s *Store, d time.Duration) { s.vipStaleAfter = d }
