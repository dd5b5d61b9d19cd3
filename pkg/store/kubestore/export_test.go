package kubestore

import "time"

// SetVIPStaleAfter sets how old a VIP claim without its service must be
// before s collects it.
func SetVIPStaleAfter(s *Store, d time.Duration) { s.vipStaleAfter = d }

// SetMaxSelectorShards sets how many shards the directory's selector
// names one by one (above it: the label's presence, filtered) and
// returns the previous value.
func SetMaxSelectorShards(n int) int { old := maxSelectorShards; maxSelectorShards = n; return old }
