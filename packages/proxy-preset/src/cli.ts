#!/usr/bin/env node
// The `autotls` command: run the proxy from a configuration file, check a file (and print the plan), read the
// status of a running proxy and ask it to reload, through its admin listener. The file is validated by the same
// schema and code as startProxy(); errors point at the file's line and column and name the option.
import { Command, Option } from 'commander'
import { type ConfigFile, describeConfigError, loadConfigFile } from './config-file.js'
import { type ProxyHandle, startProxy } from './index.js'
import { DEFAULT_ADMIN_HOST, DEFAULT_ADMIN_PORT, type ProxyOptions, resolveProxyOptions } from './options.js'
import { formatPlan, inspectConfig, planJson } from './plan-report.js'
import { type ConfiguredStorage, configuredStorage } from './storage-config.js'

const VERSION = '0.1.0'

function fail(message: string): never {
  process.stderr.write(`autotls: ${message}\n`)
  process.exit(1)
}

async function load(file: string): Promise<ConfigFile> {
  try {
    return await loadConfigFile(file)
  } catch (err) {
    fail(describeConfigError(err, undefined))
  }
}

/** The admin endpoint of a running proxy: --url, else the config file's `admin`, else the default. */
async function adminTarget(opts: { url?: string; token?: string; config?: string }): Promise<{
  url: string
  token: string | undefined
}> {
  let token = opts.token ?? process.env['AUTOTLS_ADMIN_TOKEN']
  if (opts.url) return { url: opts.url.replace(/\/$/, ''), token }
  let host = DEFAULT_ADMIN_HOST
  let port = DEFAULT_ADMIN_PORT
  if (opts.config) {
    const config = await load(opts.config)
    const admin = (config.options as { admin?: false | { host?: string; port?: number; token?: string } }).admin
    if (!admin) fail(`${opts.config} has no \`admin\` listener; add admin: { port: ${DEFAULT_ADMIN_PORT} } to it`)
    if (admin.host && admin.host !== '::' && admin.host !== '0.0.0.0') host = admin.host
    if (admin.port) port = admin.port
    token ??= admin.token
  }
  return { url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`, token }
}

async function adminRequest(target: { url: string; token: string | undefined }, path: string, method = 'GET') {
  let response: Response
  try {
    response = await fetch(`${target.url}${path}`, {
      method,
      headers: { accept: 'application/json', ...(target.token ? { authorization: `Bearer ${target.token}` } : {}) },
      signal: AbortSignal.timeout(30_000),
    })
  } catch (err) {
    fail(
      `cannot reach the admin listener at ${target.url}: ${(err as Error & { cause?: Error }).cause?.message ?? (err as Error).message}`,
    )
  }
  const text = await response.text()
  if (response.status === 401) fail(`the admin listener at ${target.url} wants a token: --token or AUTOTLS_ADMIN_TOKEN`)
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    body = text
  }
  return { status: response.status, body }
}

function printStatus(status: Record<string, unknown>): void {
  const out: string[] = []
  const certificates = (status['certificates'] ?? []) as Array<Record<string, unknown>>
  out.push(
    `proxy: ${String(status['state'])}, up ${String(status['uptimeSeconds'])} s, config generation ${String(status['generation'])}`,
  )
  out.push('certificates:')
  for (const c of certificates) {
    const error = c['lastError'] ? `  last error: ${String((c['lastError'] as { message: string }).message)}` : ''
    out.push(
      `  ${String(c['name'])}  ${String(c['source'])}  ${String(c['state'])}  expires ${String(c['notAfter'] ?? '-')}  renews ${String(c['nextRenewal'] ?? '-')}${error}`,
    )
  }
  out.push('routes:')
  for (const r of (status['routes'] ?? []) as Array<Record<string, unknown>>) {
    const upstreams = (r['upstreams'] as Array<{ url: string; healthy: boolean }>)
      .map((u) => `${u.url} ${u.healthy ? 'up' : 'DOWN'}`)
      .join(', ')
    out.push(`  ${String(r['route'])}  -> ${upstreams}`)
  }
  const workers = status['workers'] as Array<Record<string, unknown>> | undefined
  if (workers !== undefined) {
    out.push('workers:')
    for (const w of workers) {
      const state = w['answered'] ? `${String(w['state'])}, config generation ${String(w['generation'])}` : 'NO ANSWER'
      out.push(`  ${String(w['worker'])}  pid ${String(w['pid'])}  ${state}`)
    }
  }
  process.stdout.write(`${out.join('\n')}\n`)
}

const program = new Command()
  .name('autotls')
  .description('HTTPS reverse proxy with automatic certificates (ACME) or certificate files')
  .version(VERSION)
  .showHelpAfterError()

program
  .command('check')
  .description('validate a configuration file and print the plan: listeners, routes, ACME names and certificate files')
  .requiredOption('-c, --config <file>', 'configuration file (YAML or JSON)')
  .option('--json', 'print the plan as JSON')
  .action(async (opts: { config: string; json?: boolean }) => {
    const config = await load(opts.config)
    try {
      const report = await inspectConfig(config.options)
      process.stdout.write(opts.json ? `${JSON.stringify(planJson(report), null, 2)}\n` : formatPlan(report))
      process.stdout.write(opts.json ? '' : `${opts.config}: OK\n`)
    } catch (err) {
      fail(describeConfigError(err, config))
    }
  })

program
  .command('run')
  .description('run the proxy; SIGHUP, `autotls reload` or a change of the file reloads it; SIGINT/SIGTERM stop it')
  .requiredOption('-c, --config <file>', 'configuration file (YAML or JSON)')
  .addOption(new Option('--no-watch', 'do not reload when the file changes'))
  .action(async (opts: { config: string; watch: boolean }) => {
    const config = await load(opts.config)
    let workers: number
    let shutdown: { signals: NodeJS.Signals[]; graceMs: number }
    let admin: ReturnType<typeof resolveProxyOptions>['admin']
    try {
      ;({ workers, shutdown, admin } = resolveProxyOptions(config.options))
    } catch (err) {
      fail(describeConfigError(err, config))
    }
    // With `workers`, this process only supervises them (workers.ts); each worker runs this command again. A worker
    // stays one even if the file now says otherwise (`workers` changes only with a restart of the primary).
    const cluster =
      workers > 1 || process.env['AUTOTLS_WORKER'] !== undefined ? await import('./workers.js') : undefined
    if (cluster && !cluster.isWorker()) {
      process.exitCode = await cluster.runPrimary({
        workers,
        signals: shutdown.signals,
        graceMs: shutdown.graceMs,
        reloadSignal: 'SIGHUP',
        // The admin listener is the primary's: it asks every worker (one worker's figures would mislead).
        ...(admin ? { admin } : {}),
      })
      return
    }
    let store: ConfiguredStorage | undefined
    try {
      store = await configuredStorage(config.options)
    } catch (err) {
      fail(describeConfigError(err, config))
    }
    const prepare = (options: ProxyOptions) => {
      const withStore = store ? store.apply(options) : options
      return cluster ? cluster.withSharedTickets(withStore) : withStore
    }
    let proxy: ProxyHandle
    try {
      proxy = await startProxy(prepare(config.options), {
        reloadSource: async () => {
          const next = await loadConfigFile(opts.config)
          return { options: prepare(next.options), describeError: (err: unknown) => describeConfigError(err, next) }
        },
        watchFile: opts.watch ? opts.config : undefined,
        reloadSignal: 'SIGHUP',
        adminListener: cluster === undefined,
      })
    } catch (err) {
      fail(describeConfigError(err, config))
    }
    const { https, http } = proxy.addresses()
    const adminAt = proxy.adminAddress()
    process.stderr.write(
      `autotls: ${cluster ? `worker ${process.pid} ` : ''}serving ${proxy.options.routes.length} route(s) on https ${https.port}${http ? `, http ${http.port}` : ''}${adminAt ? `, admin ${adminAt.port}` : ''}\n`,
    )
    cluster?.serveAsWorker(proxy)
  })

program
  .command('status')
  .description("print a running proxy's certificates, routes and upstream health (from its admin listener)")
  .option('-c, --config <file>', 'read the admin address and token from this file')
  .option('--url <url>', 'admin listener URL (default http://127.0.0.1:9180)')
  .option('--token <token>', 'bearer token (or AUTOTLS_ADMIN_TOKEN)')
  .option('--json', 'print the JSON as received')
  .action(async (opts: { config?: string; url?: string; token?: string; json?: boolean }) => {
    const { status, body } = await adminRequest(await adminTarget(opts), '/status')
    if (status !== 200) fail(`the admin listener answered ${status}: ${JSON.stringify(body)}`)
    if (opts.json) process.stdout.write(`${JSON.stringify(body, null, 2)}\n`)
    else printStatus(body as Record<string, unknown>)
  })

program
  .command('reload')
  .description('ask a running proxy to re-read its configuration file (like SIGHUP)')
  .option('-c, --config <file>', 'read the admin address and token from this file')
  .option('--url <url>', 'admin listener URL (default http://127.0.0.1:9180)')
  .option('--token <token>', 'bearer token (or AUTOTLS_ADMIN_TOKEN)')
  .action(async (opts: { config?: string; url?: string; token?: string }) => {
    const { status, body } = await adminRequest(await adminTarget(opts), '/reload', 'POST')
    const result = body as { applied?: boolean; errors?: string[]; generation?: number }
    if (status === 200 && result.applied) {
      process.stdout.write(`reloaded: configuration generation ${String(result.generation)}\n`)
      return
    }
    fail(
      `reload refused, the running configuration is kept:\n  ${(result.errors ?? [JSON.stringify(body)]).join('\n  ')}`,
    )
  })

program.parseAsync(process.argv).catch((err: Error) => fail(err.message))
