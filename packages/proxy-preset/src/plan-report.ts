// `autotls check`: everything createProxy() would refuse, found without listening or contacting a CA (options,
// certificate files, which names go to ACME, fastify-acme's own option checks), and the plan printed for a human:
// listeners, routes, which names get ACME certificates and which are served from which files.
import { CertResolver } from '@autotls/fastify-acme'
import { resolveOptions as resolveAcmeOptions } from '@autotls/fastify-acme/internal'
import { type CertificatePlan, planCertificates } from './certificates.js'
import { atOption } from './errors.js'
import { type ManualCertificateStatus, ManualCertificates } from './manual-certs.js'
import { type ProxyOptions, type ResolvedProxyOptions, resolveProxyOptions } from './options.js'

export interface ConfigPlan {
  options: ResolvedProxyOptions
  plan: CertificatePlan
  files: ManualCertificateStatus[]
  /** The ACME directory URL, when some names get ACME certificates. */
  acmeDirectory: string | undefined
}

const silent = {
  level: 'silent',
  fatal() {},
  error() {},
  warn() {},
  info() {},
  debug() {},
  trace() {},
  silent() {},
  child() {
    return silent
  },
} as never

/** Validates options as createProxy() does (certificate files read and checked), without listening. */
export async function inspectConfig(input: ProxyOptions): Promise<ConfigPlan> {
  const options = resolveProxyOptions(input)
  let files: ManualCertificateStatus[] = []
  let manual: { hosts(): string[] } = { hosts: () => [] }
  if (options.certificates.length > 0 || options.defaultCertificate) {
    const certificates = new ManualCertificates({
      sources: options.certificates,
      defaultSource: options.defaultCertificate,
      resolver: new CertResolver(),
      log: silent,
      debounceMs: 0,
      pollIntervalMs: 0,
    })
    try {
      await certificates.load()
      files = certificates.status()
      manual = certificates
    } finally {
      await certificates.close()
    }
  }
  const plan = planCertificates(options, manual)
  let acmeDirectory: string | undefined
  if (plan.acmeNames.length > 0 && options.acme) {
    const { names: _names, ...acme } = options.acme
    try {
      acmeDirectory = resolveAcmeOptions({ ...acme, names: plan.acmeNames }).directoryUrl
    } catch (err) {
      throw atOption(err as Error, ['acme'])
    }
  }
  return { options, plan, files, acmeDirectory }
}

function listen(where: { host: string; port: number }): string {
  return where.host.includes(':') ? `[${where.host}]:${where.port}` : `${where.host}:${where.port}`
}

/** The plan as the text `autotls check` prints. */
export function formatPlan(report: ConfigPlan): string {
  const { options, plan, files } = report
  const lines: string[] = ['listeners:']
  lines.push(`  https  ${listen(options.https)}  ${options.https.http2 ? 'HTTP/2 + HTTP/1.1' : 'HTTP/1.1'}`)
  if (options.http) {
    const does = [
      options.http.redirect ? `308 to https (port ${options.http.redirectPort})` : undefined,
      options.http.acmeChallenges ? 'ACME HTTP-01' : undefined,
    ].filter(Boolean)
    lines.push(`  http   ${listen(options.http)}  ${does.join(', ')}`)
  } else lines.push('  http   off')
  if (options.admin) {
    lines.push(`  admin  ${listen(options.admin)}  ${options.admin.token ? 'bearer token' : 'no token'}`)
  }
  if (options.health) lines.push(`  health ${options.health.path} on ${options.health.host ?? 'any host'}`)
  lines.push('routes:')
  const width = Math.max(...options.routes.map((r) => r.label.length))
  for (const route of options.routes) {
    const extras = [
      route.rewritePrefix !== route.path ? `rewrite to ${route.rewritePrefix || '/'}` : undefined,
      route.websocket ? 'websocket' : undefined,
    ].filter(Boolean)
    lines.push(
      `  ${route.label.padEnd(width)}  -> ${route.upstreams.join(', ')}${extras.length ? `  (${extras.join(', ')})` : ''}`,
    )
  }
  lines.push('certificates:')
  if (plan.acmeNames.length > 0) {
    lines.push(`  ACME from ${report.acmeDirectory}:`)
    for (const name of plan.acmeNames) lines.push(`    ${name}`)
  } else lines.push('  ACME: none')
  for (const file of files) {
    lines.push(
      `  file ${file.cert} (key ${file.key}): ${file.isDefault ? 'default certificate' : file.hosts.join(', ')}; ` +
        `issuer ${file.issuer.replace(/\n/g, ', ')}; expires ${file.notAfter}`,
    )
  }
  if (options.accessLog) lines.push('access log: on')
  return `${lines.join('\n')}\n`
}

/** The plan as JSON (`autotls check --json`). */
export function planJson(report: ConfigPlan): Record<string, unknown> {
  const { options, plan, files } = report
  return {
    listeners: {
      https: options.https,
      http: options.http ?? false,
      admin: options.admin
        ? { host: options.admin.host, port: options.admin.port, token: !!options.admin.token }
        : false,
    },
    routes: options.routes.map((r) => ({
      route: r.label,
      upstreams: r.upstreams,
      rewritePrefix: r.rewritePrefix,
      websocket: r.websocket,
    })),
    acme: { directory: report.acmeDirectory ?? null, names: plan.acmeNames },
    files: files.map((f) => ({
      cert: f.cert,
      key: f.key,
      hosts: f.hosts,
      isDefault: f.isDefault,
      notAfter: f.notAfter,
    })),
  }
}
