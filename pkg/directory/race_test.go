//go:build race

package directory

// raceEnabled: the race detector slows everything 5-10x, past
// FastLANConfig's 100 ms probe timeout, so the real-membership tests use
// testGossipConfig's tolerant timing instead.
const raceEnabled = true
