package service

import (
	"fmt"
	"math"
	"testing"
)

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250+1)
	}
	return out
}

func mustMaglev(t *testing.T, b []string, m int) []int {
	t.Helper()
	tab, err := Maglev(b, m)
	if err != nil {
		t.Fatal(err)
	}
	if len(tab) != m {
		t.Fatalf("table of %d slots, want %d", len(tab), m)
	}
	return tab
}

// byName maps a table to backend names so tables of different sets compare.
func byName(tab []int, b []string) []string {
	out := make([]string, len(tab))
	for i, x := range tab {
		out[i] = b[x]
	}
	return out
}

func TestMaglevSpread(t *testing.T) {
	for _, n := range []int{3, 10, 100} {
		b := names(n)
		tab := mustMaglev(t, b, DefaultTableSize)
		count := make([]int, n)
		for _, x := range tab {
			count[x]++
		}
		even := float64(DefaultTableSize) / float64(n)
		for i, c := range count {
			if math.Abs(float64(c)-even) > 0.10*even {
				t.Errorf("n=%d: backend %d has %d slots, even is %.1f (more than 10%% off)", n, i, c, even)
			}
		}
	}
}

func TestMaglevRemoveOne(t *testing.T) {
	for _, n := range []int{3, 10, 100} {
		for _, victim := range []int{0, n / 2, n - 1} {
			b := names(n)
			before := byName(mustMaglev(t, b, DefaultTableSize), b)
			rest := append(append([]string(nil), b[:victim]...), b[victim+1:]...)
			after := byName(mustMaglev(t, rest, DefaultTableSize), rest)
			others, moved := 0, 0
			for i := range before {
				if before[i] == b[victim] {
					continue // the removed backend's slots must move
				}
				others++
				if after[i] != before[i] {
					moved++
				}
			}
			if frac := float64(moved) / float64(others); frac > 0.01 {
				t.Errorf("n=%d, removing backend %d moved %d of %d other slots (%.2f%% > 1%%)", n, victim, moved, others, 100*frac)
			}
		}
	}
}

func TestMaglevAddOne(t *testing.T) {
	for _, n := range []int{3, 10, 100} {
		b := names(n + 1)
		before := byName(mustMaglev(t, b[:n], DefaultTableSize), b[:n])
		after := byName(mustMaglev(t, b, DefaultTableSize), b)
		moved := 0
		for i := range before {
			if after[i] != before[i] {
				moved++
			}
		}
		limit := 1/float64(n+1) + 0.01
		if frac := float64(moved) / float64(len(before)); frac > limit {
			t.Errorf("n=%d, adding one moved %.2f%% of the slots, limit %.2f%%", n, 100*frac, 100*limit)
		}
	}
}

func TestMaglevOrderIndependent(t *testing.T) {
	b := names(10)
	r := append([]string(nil), b...)
	for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
		r[i], r[j] = r[j], r[i]
	}
	x, y := byName(mustMaglev(t, b, 1021), b), byName(mustMaglev(t, r, 1021), r)
	for i := range x {
		if x[i] != y[i] {
			t.Fatalf("slot %d: %s for one order, %s for the reverse", i, x[i], y[i])
		}
	}
}

func TestMaglevRefusesBadInput(t *testing.T) {
	for _, c := range []struct {
		b []string
		m int
	}{
		{names(3), 1000},             // not prime
		{names(3), 3},                // not larger than the set
		{[]string{"a", "b", "a"}, 7}, // duplicate
		{names(3), MaxTableSize + 2}, // too large
	} {
		if _, err := Maglev(c.b, c.m); err == nil {
			t.Errorf("Maglev(%v, %d) succeeded", c.b, c.m)
		}
	}
}
