//go:build race

package agent_test

// raceEnabled makes the privileged tests build genied with the race
// detector too, so data races in the agent fail the test run.
const raceEnabled = true
