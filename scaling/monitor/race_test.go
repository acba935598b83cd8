//go:build race

package monitor

// raceEnabled shrinks the heavier loops under -race, which is ~10x slower.
const raceEnabled = true
