//go:build !race

package main

// raceMemoryFactor scales the memory bounds of the tests: without the race
// detector, none.
const raceMemoryFactor = 1
