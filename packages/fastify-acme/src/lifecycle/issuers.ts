// The CAs certificates are ordered from. Today one, from the `directory` option; the list is the seam for a second
// CA (try the next issuer after repeated failures). Each issuer keeps its account and certificates under its own
// storage folder, keyed by directory URL, so two CAs never mix.
import type { ResolvedOptions } from '../options.js'
import { directoryKey } from '../storage/index.js'

export interface Issuer {
  directoryUrl: string
  /** The storage folder of this issuer (directoryKey(directoryUrl)). */
  dir: string
  contact: string[]
  eab: { kid: string; hmacKey: string } | undefined
}

export function issuersFrom(options: ResolvedOptions): Issuer[] {
  return [
    {
      directoryUrl: options.directoryUrl,
      dir: directoryKey(options.directoryUrl),
      contact: options.contact,
      eab: options.eab,
    },
  ]
}
