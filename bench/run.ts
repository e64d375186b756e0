// Placeholder: the benchmark runner lands in the next commit.
console.log('bench: not yet implemented')
