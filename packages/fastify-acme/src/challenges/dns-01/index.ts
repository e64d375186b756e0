// DNS-01 building blocks: the provider contract, the built-in providers (RFC 2136, exec), the propagation check and
// the solver that runs one challenge. The package entry exports the providers and errors; the rest is for tests.
export {
  ERR_DNS_EXEC,
  ERR_DNS_NO_ANSWER,
  ERR_DNS_OPTIONS,
  ERR_DNS_PROPAGATION_TIMEOUT,
  ERR_DNS_TSIG,
  ERR_DNS_UPDATE_REFUSED,
  ERR_DNS_ZONE,
} from './errors.js'
export { DEFAULT_EXEC_TIMEOUT_MS, ExecProvider, type ExecProviderOptions } from './exec.js'
export {
  type AuthoritativeServer,
  authoritativeServers,
  type ChallengeTarget,
  DEFAULT_PROPAGATION_INTERVAL_MS,
  DEFAULT_PROPAGATION_TIMEOUT_MS,
  findZone,
  type LookupOptions,
  type PropagationOptions,
  type PropagationResult,
  resolveChallengeName,
  waitForPropagation,
} from './propagation.js'
export { challengeRecordName, type DnsProvider, txtValue } from './provider.js'
export {
  DEFAULT_RFC2136_TIMEOUT_MS,
  DEFAULT_RFC2136_TTL,
  type DnsRcodeError,
  type Rfc2136Options,
  Rfc2136Provider,
} from './rfc2136.js'
export { type Dns01Options, type Dns01Step, solveDns01 } from './solver.js'
export type { TsigAlgorithm } from './tsig.js'
