// The machine side of the benchmarks: Debian packages the suite needs, CPU pinning, per-process CPU time and RSS
// read from /proc, the machine description recorded with every run, and child processes that are always stopped.
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { cpus, loadavg, totalmem } from 'node:os'

/** The two cores of the method: the proxy under test on one, load generator and upstream on the other. */
export const PROXY_CORE = 0
export const LOAD_CORE = 1

export function has(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
}

/** Installs the Debian packages behind missing commands (root only), or exits with the command to run. */
export function ensureDebianPackages(wanted: ReadonlyArray<[command: string, pkg: string]>): void {
  const missing = [...new Set(wanted.filter(([cmd]) => !has(cmd) && !has(`/usr/sbin/${cmd}`)).map(([, p]) => p))]
  if (missing.length === 0) return
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0
  if (!isRoot || !has('apt-get')) {
    console.error(`bench: missing Debian packages; install them with: sudo apt-get install -y ${missing.join(' ')}`)
    process.exit(1)
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  console.error(`bench: installing ${missing.join(' ')} (apt-get)`)
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env })
  execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { stdio: 'inherit', env })
  // Debian's nginx/haproxy packages start a system service where an init system runs; it is not ours to keep.
  for (const service of ['nginx', 'haproxy', 'caddy']) {
    spawnSync('sh', ['-c', `command -v service >/dev/null && service ${service} stop`], { stdio: 'ignore' })
  }
}

/** Pins this process (and so the children it starts without taskset) to one core. */
export function pinSelf(core: number): void {
  spawnSync('taskset', ['-pc', String(core), String(process.pid)], { stdio: 'ignore' })
}

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  } catch {
    return 100
  }
})()

/** user+sys CPU seconds of a process (all its threads), from /proc/<pid>/stat; NaN once it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name, which is in parentheses and may contain spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK
  } catch {
    return Number.NaN
  }
}

/**
 * CPU seconds of a process and its child processes (a node:cluster primary and its workers); the same as
 * cpuSeconds() for a process without children. Children that exited are not counted.
 */
export function treeCpuSeconds(pid: number): number {
  let total = cpuSeconds(pid)
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const children = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim()
      for (const child of children === '' ? [] : children.split(' ')) {
        const seconds = cpuSeconds(Number(child))
        if (!Number.isNaN(seconds)) total += seconds
      }
    }
  } catch {
    // Gone: what was read so far.
  }
  return total
}

/** Resident set size in bytes, from /proc/<pid>/status (VmRSS, or VmHWM for the peak). */
export function rssBytes(pid: number, field: 'VmRSS' | 'VmHWM' = 'VmRSS'): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)
    return match ? Number(match[1]) * 1024 : Number.NaN
  } catch {
    return Number.NaN
  }
}

/** Samples VmRSS every `everyMs` until stopped; returns the highest value seen. */
export function sampleRss(pid: number, everyMs = 100): { stop(): number } {
  let peak = rssBytes(pid)
  const timer = setInterval(() => {
    const now = rssBytes(pid)
    if (now > peak) peak = now
  }, everyMs)
  return {
    stop() {
      clearInterval(timer)
      const now = rssBytes(pid)
      return Number.isNaN(now) ? peak : Math.max(peak, now)
    },
  }
}

export function loadAverage(): string {
  return loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')
}

function firstLine(cmd: string, args: string[]): string {
  try {
    const r = spawnSync(cmd, args, { encoding: 'utf8' })
    return `${r.stdout}${r.stderr}`.split('\n').find((l) => l.trim() !== '') ?? '?'
  } catch {
    return '?'
  }
}

export interface MachineInfo {
  cpu: string
  cores: number
  memory: string
  kernel: string
  os: string
  node: string
  openssl: string
  tools: Record<string, string>
}

export function machineInfo(): MachineInfo {
  const os = (() => {
    try {
      return /PRETTY_NAME="([^"]+)"/.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? '?'
    } catch {
      return '?'
    }
  })()
  return {
    cpu: cpus()[0]?.model ?? '?',
    cores: cpus().length,
    memory: `${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
    kernel: firstLine('uname', ['-r']),
    os,
    node: process.version,
    openssl: process.versions.openssl ?? '?',
    tools: {
      nginx: firstLine('nginx', ['-v']).replace(/^nginx version: /, ''),
      haproxy: firstLine('haproxy', ['-v']).replace(/ - https.*$/, ''),
      caddy: firstLine('caddy', ['version']),
      wrk: firstLine('wrk', ['--version']).replace(/ Copyright.*$/, ''),
      h2load: firstLine('h2load', ['--version']),
      pebble: firstLine('dpkg-query', ['-W', `-f=${'$'}{Version}`, 'pebble']),
    },
  }
}

/** A child process pinned to `core`, stopped (SIGTERM, then SIGKILL) by stop() and when this process exits. */
export interface Child {
  readonly proc: ChildProcess
  readonly pid: number
  output(): string
  stop(): Promise<void>
}

const live = new Set<ChildProcess>()
process.once('exit', () => {
  for (const proc of live) proc.kill('SIGKILL')
})
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    for (const proc of live) proc.kill('SIGKILL')
    process.exit(130)
  })
}

export function startPinned(
  core: number | string,
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; keepOutput?: boolean } = {},
): Child {
  const proc = spawn('taskset', ['-c', String(core), cmd, ...args], {
    env: opts.env ?? process.env,
    cwd: opts.cwd,
    stdio: ['ignore', opts.keepOutput === false ? 'ignore' : 'pipe', 'pipe'],
  })
  live.add(proc)
  let out = ''
  const keep = (chunk: Buffer): void => {
    out += chunk.toString('utf8')
    if (out.length > 200_000) out = out.slice(-100_000)
  }
  proc.stdout?.on('data', keep)
  proc.stderr?.on('data', keep)
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()))
  proc.once('exit', () => live.delete(proc))
  if (proc.pid === undefined) throw new Error(`could not start ${cmd}`)
  return {
    proc,
    pid: proc.pid,
    output: () => out,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return
      proc.kill('SIGTERM')
      const timer = setTimeout(() => proc.kill('SIGKILL'), 3000)
      await exited
      clearTimeout(timer)
    },
  }
}

/** Runs a command pinned to `core` to completion (bounded by `timeoutMs`) and returns its output. */
export function runPinned(
  core: number,
  cmd: string,
  args: string[],
  timeoutMs: number,
  env?: NodeJS.ProcessEnv,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn('taskset', ['-c', String(core), cmd, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: env ?? process.env,
    })
    live.add(proc)
    let stdout = ''
    let stderr = ''
    proc.stdout.on('data', (c: Buffer) => {
      stdout += c.toString('utf8')
    })
    proc.stderr.on('data', (c: Buffer) => {
      stderr += c.toString('utf8')
    })
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs)
    proc.once('error', reject)
    proc.once('close', (code) => {
      clearTimeout(timer)
      live.delete(proc)
      resolve({ code, stdout, stderr })
    })
  })
}
