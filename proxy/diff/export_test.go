package diff

// BenchOrder is benchOrder for the benchmarks of package diff_test.
const BenchOrder = benchOrder
