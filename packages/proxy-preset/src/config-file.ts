// Configuration files for the CLI: YAML or JSON (JSON is read by the YAML parser, which keeps every node's position),
// `${NAME}` replaced from the environment in string values (secrets such as the EAB key stay out of the file), and
// errors located: an error carrying an option path (errors.ts atOption) is reported at the line and column of that
// option in the file. The options themselves are validated by the same code as createProxy()/startProxy().
import { readFile } from 'node:fs/promises'
import { isMap, isScalar, isSeq, LineCounter, type Node, parseDocument } from 'yaml'
import { ERR_CONFIG_FILE, type OptionPath, optionPathOf } from './errors.js'
import type { ProxyOptions } from './options.js'

export interface ConfigFile {
  /** The file's path as given. */
  file: string
  /** The options it holds, environment variables substituted; not validated yet. */
  options: ProxyOptions
  /** `file:line:col` of the option at `path` (or of its closest existing parent). */
  locate(path: OptionPath): string
}

const VARIABLE = /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g

/** Replaces `${NAME}` in every string value; `$${` is a literal `${`. Throws naming the option and the variable. */
function substitute(value: unknown, env: NodeJS.ProcessEnv, path: OptionPath, locate: ConfigFile['locate']): unknown {
  if (typeof value === 'string') {
    if (!value.includes('${')) return value
    return value.replace(VARIABLE, (match, name: string | undefined) => {
      if (name === undefined) return '${'
      const found = env[name]
      if (found === undefined) {
        throw configError(
          locate(path),
          `${path.join('.')}: environment variable ${name} is not set; export ${name}=... before starting (or write $\${${name}} for a literal ${match})`,
        )
      }
      return found
    })
  }
  if (Array.isArray(value)) return value.map((v, i) => substitute(v, env, [...path, i], locate))
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) out[k] = substitute(v, env, [...path, k], locate)
    return out
  }
  return value
}

function configError(where: string, message: string): Error {
  const error = new ERR_CONFIG_FILE(`${where}: ${message}`)
  ;(error as Error & { located?: string }).located = `${where}: ${message}`
  return error
}

/** Parses a configuration file's text. Throws FPROXY_CONFIG_FILE (syntax, missing variable) with the position. */
export function parseConfigText(text: string, file: string, env: NodeJS.ProcessEnv = process.env): ConfigFile {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true })
  const at = (offset: number): string => {
    const { line, col } = lineCounter.linePos(offset)
    return `${file}:${line}:${col}`
  }
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!
    throw configError(at(first.pos[0]), `not valid YAML/JSON: ${first.message.split('\n')[0]}`)
  }
  const locate = (path: OptionPath): string => {
    let node: unknown = doc.contents
    let offset = (doc.contents as Node | null)?.range?.[0] ?? 0
    for (const segment of path) {
      if (isMap(node)) {
        const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(segment))
        if (pair === undefined) break
        // An option is reported where its key is written.
        offset = (pair.key as Node).range?.[0] ?? offset
        node = pair.value
      } else if (isSeq(node) && typeof segment === 'number') {
        const item = node.items[segment] as Node | undefined
        if (item === undefined) break
        offset = item.range?.[0] ?? offset
        node = item
      } else break
    }
    return at(offset)
  }
  const data = doc.toJS()
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw configError(at(0), 'the file must hold an object with at least `routes` (see the proxy-preset README)')
  }
  return { file, options: substitute(data, env, [], locate) as ProxyOptions, locate }
}

/** Reads and parses a configuration file (see parseConfigText). */
export async function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): Promise<ConfigFile> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw configError(file, `cannot read the configuration file: ${(err as Error).message}`)
  }
  return parseConfigText(text, file, env)
}

/** The leading dotted option path of a message (`routes.0.upstream: ...`), for errors without an attached path. */
function pathFromMessage(message: string): OptionPath | undefined {
  const match = /^(?:proxy-preset: (?:invalid options: )?)?([A-Za-z]+(?:\.[A-Za-z0-9_-]+)*): /.exec(message)
  if (!match) return undefined
  return match[1]!.split('.').map((s) => (/^\d+$/.test(s) ? Number(s) : s))
}

/** One line for an error about a configuration file: `file:line:col: CODE: message` (the message names the option). */
export function describeConfigError(error: unknown, config: ConfigFile | undefined): string {
  const err = error as Error & { code?: string; located?: string }
  if (err.located) return `${err.located}`
  const message = String(err.message ?? err).replace(/^proxy-preset: (?:invalid options: )?/, '')
  const path = optionPathOf(err) ?? pathFromMessage(err.message ?? '')
  const code = err.code ? `${err.code}: ` : ''
  if (config === undefined) return `${code}${message}`
  const where = config.locate(path ?? [])
  const named = path && path.length > 0 && !message.startsWith(path.join('.')) ? `${path.join('.')}: ` : ''
  return `${where}: ${code}${named}${message}`
}
