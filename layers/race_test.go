//go:build race

package layers_test

// raceEnabled scales down tests whose size only matters for speed.
const raceEnabled = true
