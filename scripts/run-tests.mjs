#!/usr/bin/env node
// Runs the test suite with Node's own test runner. TypeScript sources are loaded through tsx and
// workspace packages resolve to their sources (the "source" export condition), so no build is needed.
// Usage: node scripts/run-tests.mjs [substring ...]   (only files whose path contains one of the substrings)
import { spawn } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const roots = ['packages', 'test', 'examples']
const files = []
function walk(dir) {
  for (const entry of readdirSync(dir)) {
    if (entry === 'node_modules' || entry === 'dist' || entry.startsWith('.')) continue
    const full = join(dir, entry)
    if (statSync(full).isDirectory()) walk(full)
    else if (entry.endsWith('.test.ts')) files.push(relative(root, full))
  }
}
for (const r of roots) walk(join(root, r))
const filters = process.argv.slice(2).filter((a) => !a.startsWith('--'))
const selected = files.sort().filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)))
if (selected.length === 0) {
  console.error('no test files matched')
  process.exit(1)
}
const concurrency = process.env.TEST_CONCURRENCY ?? '2'
const child = spawn(
  process.execPath,
  // A per-test timeout turns a hang (e.g. a certificate that never comes) into a failure instead of a stalled run.
  [
    '--import',
    'tsx',
    '--conditions=source',
    '--test',
    `--test-concurrency=${concurrency}`,
    `--test-timeout=${process.env.TEST_TIMEOUT_MS ?? '300000'}`,
    ...selected,
  ],
  { cwd: root, stdio: 'inherit' },
)
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)))
