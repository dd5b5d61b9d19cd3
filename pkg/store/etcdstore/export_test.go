package etcdstore

// SetMaxShardWatches sets how many shards WatchShards watches one by one
// (above it: one watch of the whole directory, filtered) and returns the
// previous value.
func SetMaxShardWatches(n int) int { old := maxShardWatches; maxShardWatches = n; return old }
