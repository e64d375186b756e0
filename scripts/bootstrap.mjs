#!/usr/bin/env node
// Makes a fresh Debian machine ready to run the demo and the tests: Debian packages (pebble, openssl, curl,
// redis-server and, for the browser test, chromium), pnpm at the version package.json pins, and node modules from
// the lockfile.
// Idempotent and quick when everything is already there. Usage: node scripts/bootstrap.mjs [--with-browser]
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const withBrowser = process.argv.includes('--with-browser')
const log = (msg) => process.stderr.write(`[bootstrap] ${msg}\n`)

function has(cmd) {
  if (spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0) return true
  return existsSync(`/usr/sbin/${cmd}`)
}

function run(cmd, args, opts = {}) {
  log(`${cmd} ${args.join(' ')}`)
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root, ...opts })
  if (r.status !== 0) {
    log(`failed: ${cmd} ${args.join(' ')} (exit ${r.status})`)
    process.exit(r.status ?? 1)
  }
}

// 1. Debian packages.
const wanted = [
  ['pebble', 'pebble'],
  // Same Debian package: the harness's DNS server.
  ['pebble-challtestsrv', 'pebble'],
  // DNS-01 tests: a real authoritative server (startBind) and nsupdate, which the harness tests and the exec-provider
  // example script use. /usr/sbin is not on every PATH, so named is looked for there too (see has()).
  ['named', 'bind9'],
  ['nsupdate', 'bind9-dnsutils'],
  ['openssl', 'openssl'],
  ['curl', 'curl'],
  // The Redis storage's tests (packages/storage-redis) and the harness's startRedis().
  ['redis-server', 'redis-server'],
  // The reliability suite's protocol/cipher scan (test/reliability/tls-scan.test.ts).
  ['nmap', 'nmap'],
  ...(withBrowser
    ? [
        ['chromium', 'chromium'],
        ['certutil', 'libnss3-tools'],
      ]
    : []),
]
const missing = [...new Set(wanted.filter(([cmd]) => !has(cmd)).map(([, pkg]) => pkg))]
if (missing.length > 0) {
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0
  if (!isRoot || !has('apt-get')) {
    log(
      `missing Debian packages: ${missing.join(' ')}. Install them with: sudo apt-get install -y ${missing.join(' ')}`,
    )
    process.exit(1)
  }
  run('apt-get', ['update', '-qq'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
  run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], {
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  })
}

// 2. pnpm at the pinned version.
const pinned = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).packageManager.replace(/^pnpm@/, '')
let pnpmVersion = ''
try {
  pnpmVersion = execFileSync('pnpm', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
} catch {}
if (pnpmVersion !== pinned) run('npm', ['install', '-g', '--no-fund', '--no-audit', `pnpm@${pinned}`])

// 3. Node modules, when absent or older than the lockfile.
const marker = join(root, 'node_modules', '.modules.yaml')
const stale = !existsSync(marker) || statSync(marker).mtimeMs < statSync(join(root, 'pnpm-lock.yaml')).mtimeMs
if (stale) run('pnpm', ['install', '--frozen-lockfile', '--reporter=append-only'])
