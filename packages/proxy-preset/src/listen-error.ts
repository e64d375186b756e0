// A listen failure (address in use, no permission, no such address) as an FPROXY_LISTEN_FAILED error that names the
// listener and the option to change: the proxy's own listeners and the admin listener (also the primary's, with
// `workers`).
import { atOption, ERR_LISTEN_FAILED } from './errors.js'
import type { ResolvedListen } from './options.js'

/** A listen failure that names the listener and the option to change. */
export function listenError(err: unknown, where: ResolvedListen, listener: string): Error {
  const code = (err as { code?: string }).code
  const address = where.host.includes(':') ? `[${where.host}]:${where.port}` : `${where.host}:${where.port}`
  const reason =
    code === 'EADDRINUSE'
      ? `the port is in use by another process; stop it or choose another ${listener}.port`
      : code === 'EACCES'
        ? `permission denied (ports below 1024 need a privilege; see "Running unprivileged"), or choose another ${listener}.port`
        : code === 'EADDRNOTAVAIL'
          ? `no interface of this machine has that address; fix ${listener}.host`
          : `${(err as Error).message}`
  return atOption(new ERR_LISTEN_FAILED(listener, address, reason, { cause: err }), [listener])
}
