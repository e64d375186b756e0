// Coded errors of DNS-01 (providers, dynamic updates, propagation), FACME_DNS_*: to be merged into src/errors.ts
// when DNS-01 is wired into the plugin. Messages say what to check; they never carry a TSIG secret, and the exec
// provider's stderr excerpt has the challenge value and the environment's secrets masked.
import createError from '@fastify/error'

/** Pass `{ cause }` as the last argument to keep the underlying error. */
export type Cause = { cause: unknown }

/** The server answered an RFC 2136 UPDATE with an error RCODE (REFUSED, NOTAUTH without TSIG error, NOTZONE, ...). */
export const ERR_DNS_UPDATE_REFUSED = createError<[string, string, string, string, Cause?]>(
  'FACME_DNS_UPDATE_REFUSED',
  'fastify-acme: DNS server %s refused the update of %s (zone %s): %s',
  502,
)
/** TSIG failed: BADKEY, BADSIG, BADTIME, or a response whose signature does not verify. */
export const ERR_DNS_TSIG = createError<[string, string, Cause?]>(
  'FACME_DNS_TSIG',
  'fastify-acme: DNS server %s rejected the TSIG signature (%s); check the key name, the secret (base64) and the algorithm against the server configuration, and the clock of this host',
  502,
)
/** No answer from a DNS server within the timeout (UDP retries and TCP included). */
export const ERR_DNS_NO_ANSWER = createError<[string, string, Cause?]>(
  'FACME_DNS_NO_ANSWER',
  'fastify-acme: no answer from DNS server %s: %s',
  504,
)
/** The zone of a name could not be found (no SOA up the tree), or a response made no sense. */
export const ERR_DNS_ZONE = createError<[string, string, Cause?]>(
  'FACME_DNS_ZONE',
  'fastify-acme: cannot find the DNS zone of %s: %s',
  502,
)
/** Not every authoritative server answered the TXT value before the timeout. */
export const ERR_DNS_PROPAGATION_TIMEOUT = createError<[string, number, string, Cause?]>(
  'FACME_DNS_PROPAGATION_TIMEOUT',
  'fastify-acme: the TXT record %s did not reach every authoritative server within %d ms: %s',
  504,
)
/** The exec provider's command failed, timed out or could not start. */
export const ERR_DNS_EXEC = createError<[string, string, Cause?]>(
  'FACME_DNS_EXEC',
  'fastify-acme: the DNS command %s failed: %s',
  502,
)
/** A provider option is wrong (e.g. an unknown TSIG algorithm, a secret that is not base64). */
export const ERR_DNS_OPTIONS = createError<[string, Cause?]>('FACME_DNS_OPTIONS', 'fastify-acme: DNS-01: %s')
