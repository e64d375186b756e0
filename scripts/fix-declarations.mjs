#!/usr/bin/env node
// Post-build step for the emitted declarations (usage: node fix-declarations.mjs <dist folder>).
//
// `errors.ts` calls `createError` from @fastify/error through a default import, and tsc names the inferred types in
// dist/errors.d.ts through it: `createError.FastifyErrorConstructor<...>`. @fastify/error's types are `export =`
// of a function merged with a namespace that also has a `default` member, so under `moduleResolution: Bundler` the
// default import is that `default` *value* and `createError.FastifyErrorConstructor` is no type (13 errors for
// fastify-acme, 16 for proxy-preset, with skipLibCheck false). A namespace import names the same types under
// NodeNext, Node16 and Bundler alike; the declarations only use the name as a type qualifier, which is checked
// here, so nothing else changes.
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

const dist = process.argv[2]
if (!dist) {
  console.error('usage: node fix-declarations.mjs <dist folder>')
  process.exit(2)
}
const IMPORT = /^import (\w+) from '@fastify\/error';$/m

function walk(dir) {
  for (const entry of readdirSync(dir)) {
    const full = join(dir, entry)
    if (statSync(full).isDirectory()) walk(full)
    else if (entry.endsWith('.d.ts')) fix(full)
  }
}

function fix(file) {
  const text = readFileSync(file, 'utf8')
  const match = IMPORT.exec(text)
  if (!match) return
  const name = match[1]
  const rest = text.replace(match[0], '')
  const uses = rest.match(new RegExp(`\\b${name}\\b(\\.)?`, 'g')) ?? []
  if (uses.some((use) => !use.endsWith('.'))) {
    console.error(`${file}: ${name} is used other than as a type qualifier; fix the source's types instead`)
    process.exit(1)
  }
  writeFileSync(file, text.replace(match[0], `import type * as ${name} from '@fastify/error';`))
}

walk(dist)
