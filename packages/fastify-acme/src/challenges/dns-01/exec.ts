// The exec DNS provider (as lego's): runs the user's command as `<command> [args...] present <fqdn> <value>` and
// `... cleanup <fqdn> <value>`, without a shell, with a timeout; exit 0 is success, anything else FACME_DNS_EXEC
// with the exit code and an excerpt of stderr in which secrets are masked.
import { execFile } from 'node:child_process'
import { ERR_DNS_EXEC } from './errors.js'
import type { DnsProvider } from './provider.js'

export const DEFAULT_EXEC_TIMEOUT_MS = 60_000
const STDERR_EXCERPT = 500

export interface ExecProviderOptions {
  /** Executable (absolute path, or a name looked up on PATH). Run directly: no shell, no word splitting. */
  command: string
  /** Arguments placed before `present|cleanup <fqdn> <value>`. */
  args?: string[]
  /** Per call; the command is killed (SIGTERM) past it. Default 60 s. */
  timeoutMs?: number
  /** Added to the environment the command inherits. Their values are masked in error messages. */
  env?: Record<string, string>
  /** Passed to the propagation check as this provider's {@link DnsProvider.propagationTimeoutMs}. */
  propagationTimeoutMs?: number
}

// Environment variables whose values never appear in an error message, besides those given in `env`.
const SECRET_NAME = /SECRET|TOKEN|PASSWORD|PASSWD|KEY|CREDENTIAL|AUTH/i

export class ExecProvider implements DnsProvider {
  readonly propagationTimeoutMs: number | undefined
  readonly #options: ExecProviderOptions

  constructor(options: ExecProviderOptions) {
    if (typeof options.command !== 'string' || options.command.length === 0)
      throw new TypeError('ExecProvider needs a command')
    this.#options = options
    this.propagationTimeoutMs = options.propagationTimeoutMs
  }

  present(fqdn: string, value: string, signal: AbortSignal): Promise<void> {
    return this.#run('present', fqdn, value, signal)
  }

  cleanup(fqdn: string, value: string, signal: AbortSignal): Promise<void> {
    return this.#run('cleanup', fqdn, value, signal)
  }

  #run(action: 'present' | 'cleanup', fqdn: string, value: string, signal: AbortSignal): Promise<void> {
    const { command, args = [], env = {} } = this.#options
    const timeoutMs = this.#options.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS
    const what = `${command} ${action} ${fqdn}`
    return new Promise((resolve, reject) => {
      execFile(
        command,
        [...args, action, fqdn, value],
        { env: { ...process.env, ...env }, timeout: timeoutMs, signal, maxBuffer: 1024 * 1024, windowsHide: true },
        (error, _stdout, stderr) => {
          if (!error) return resolve()
          const failure = error as NodeJS.ErrnoException & { code?: string | number; killed?: boolean; signal?: string }
          let reason: string
          if (signal.aborted) reason = 'aborted'
          else if (failure.killed && failure.signal)
            reason = `killed (${failure.signal}) after the ${timeoutMs} ms timeout`
          else if (typeof failure.code === 'number') reason = `exit code ${failure.code}`
          else if (failure.signal) reason = `killed by ${failure.signal}`
          else reason = `could not run it (${failure.code ?? failure.message})`
          const excerpt = mask(String(stderr).trim(), env).slice(-STDERR_EXCERPT)
          // No `cause`: Node's error message holds the whole unmasked stderr.
          reject(new ERR_DNS_EXEC(what, excerpt ? `${reason}; stderr: ${excerpt}` : reason))
        },
      )
    })
  }
}

/** stderr with the values of given and secret-looking environment variables replaced by `***`. */
function mask(text: string, env: Record<string, string>): string {
  const secrets = new Set<string>(Object.values(env))
  for (const [name, value] of Object.entries(process.env)) if (value && SECRET_NAME.test(name)) secrets.add(value)
  let masked = text
  // Longest first, so a secret containing another is masked whole. Very short values would mask ordinary words.
  for (const secret of [...secrets].filter((s) => s.length >= 4).sort((a, b) => b.length - a.length))
    masked = masked.split(secret).join('***')
  return masked
}
