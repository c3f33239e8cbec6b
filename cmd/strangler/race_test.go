//go:build race

package main

// raceMemoryFactor scales the memory bounds of the tests: the race
// detector keeps shadow memory for every allocation.
const raceMemoryFactor = 4
