// File-system Storage, the default. Writes are atomic and durable (temp file, fsync, rename, fsync of the folder);
// files are 0600 and folders 0700 because they hold private keys. The lock is a lock file created with O_EXCL,
// refreshed while held and taken over when stale, so it also works between processes on one machine.
import { randomBytes } from 'node:crypto'
import { constants, promises as fs, readFile, readFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { basename, dirname, join, relative, sep } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { ERR_LOCK_TIMEOUT, ERR_STORAGE } from '../errors.js'
import { watchFolder } from './file-watch.js'
import {
  assertKey,
  type Lease,
  type LockOptions,
  type Storage,
  type StorageChange,
  type StorageWatch,
} from './index.js'

const FILE_MODE = 0o600
const DIR_MODE = 0o700
/** A lock whose file has not been touched for this long is considered abandoned by a dead process. */
export const LOCK_STALE_MS = 20_000
const LOCK_REFRESH_MS = 5_000
const LOCK_POLL_MS = 200
/** The temp files put() writes (`<name>.tmp-<pid>-<12 hex>`); a key may itself contain '.tmp-' (a host name can). */
const TEMP_FILE = /\.tmp-\d+-[0-9a-f]{12}$/

export class FileStorage implements Storage {
  /** list() reads the folder: it returns every key. */
  readonly listIsComplete = true
  readonly root: string

  constructor(root: string) {
    this.root = root
  }

  #path(key: string): string {
    assertKey(key)
    return join(this.root, ...key.split('/'))
  }

  async #ensureDir(dir: string): Promise<void> {
    try {
      await fs.mkdir(dir, { recursive: true, mode: DIR_MODE })
    } catch (err) {
      // A recursive mkdir on a read-only file system reports ENOENT for a folder whose parent exists; creating one
      // level at a time reports the real cause (EROFS, EACCES, ENOSPC).
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      const missing: string[] = []
      for (let p = dir; dirname(p) !== p; p = dirname(p)) {
        if (
          await fs.stat(p).then(
            () => true,
            () => false,
          )
        )
          break
        missing.unshift(p)
      }
      for (const p of missing)
        await fs.mkdir(p, { mode: DIR_MODE }).catch((e: NodeJS.ErrnoException) => {
          if (e.code !== 'EEXIST') throw e
        })
    }
  }

  async get(key: string): Promise<Buffer | undefined> {
    const path = this.#path(key)
    try {
      // The callback form: fs.promises.readFile costs 2-3x more per small file (FileHandle round trips), which
      // shows when thousands of cached certificates are read at start.
      return await new Promise<Buffer>((resolve, reject) =>
        readFile(path, (err, data) => (err ? reject(err) : resolve(data))),
      )
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw new ERR_STORAGE(`read of ${key}`, (err as Error).message, { cause: err })
    }
  }

  /**
   * Synchronous reads, one call per batch: the plugin reads its cached certificates this way at start, before the
   * server listens, in batches of LOAD_CONCURRENCY (256 small files: ~20 ms, then the event loop turns). Through
   * the thread pool each file costs four round trips; on one core, 10,000 names loaded in 1.0-1.5 s that way and
   * 0.6-0.8 s this way.
   */
  async getMany(keys: readonly string[]): Promise<Array<Buffer | undefined | Error>> {
    return keys.map((key) => {
      try {
        return readFileSync(this.#path(key))
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
        return new ERR_STORAGE(`read of ${key}`, (err as Error).message, { cause: err })
      }
    })
  }

  async put(key: string, value: string | Uint8Array): Promise<void> {
    const path = this.#path(key)
    const dir = dirname(path)
    const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`
    try {
      await this.#ensureDir(dir)
      const handle = await fs.open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, FILE_MODE)
      try {
        await handle.writeFile(value)
        await handle.sync()
      } finally {
        await handle.close()
      }
      await fs.rename(tmp, path)
      await syncDir(dir)
    } catch (err) {
      await fs.rm(tmp, { force: true }).catch(() => {})
      throw new ERR_STORAGE(`write of ${key}`, (err as Error).message, { cause: err })
    }
    await removeOrphans(path).catch(() => {})
  }

  async delete(key: string): Promise<void> {
    const path = this.#path(key)
    try {
      await fs.rm(path, { force: true })
      await syncDir(dirname(path))
    } catch (err) {
      throw new ERR_STORAGE(`delete of ${key}`, (err as Error).message, { cause: err })
    }
  }

  async list(prefix: string): Promise<string[]> {
    const out: string[] = []
    const walk = async (dir: string): Promise<void> => {
      let entries: import('node:fs').Dirent[]
      try {
        entries = await fs.readdir(dir, { withFileTypes: true })
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
        throw new ERR_STORAGE(`list of ${prefix}`, (err as Error).message, { cause: err })
      }
      for (const entry of entries) {
        const full = join(dir, entry.name)
        if (entry.isDirectory()) await walk(full)
        else if (entry.isFile() && !TEMP_FILE.test(entry.name) && !entry.name.endsWith('.lock')) {
          const key = relative(this.root, full).split(sep).join('/')
          if (key.startsWith(prefix)) out.push(key)
        }
      }
    }
    // Start from the deepest folder the prefix names, so listing one folder does not walk the whole store.
    const folder = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : ''
    await walk(folder === '' ? this.root : join(this.root, ...folder.split('/')))
    return out.sort()
  }

  /**
   * Changes under `prefix` by any process using this folder, through inotify (see file-watch.ts). The folder the
   * prefix names is created if missing. Only on a local file system: a network file system (NFS, SMB) does not
   * report other machines' writes.
   */
  watch(prefix: string, listener: (change: StorageChange) => void): StorageWatch {
    if (prefix !== '') assertKey(prefix.endsWith('/') ? prefix.slice(0, -1) : prefix)
    return watchFolder(this.root, prefix, listener, DIR_MODE)
  }

  async lock(key: string, options: LockOptions = {}): Promise<Lease> {
    const path = `${this.#path(key)}.lock`
    const timeoutMs = options.timeoutMs ?? 30_000
    const deadline = Date.now() + timeoutMs
    await this.#ensureDir(dirname(path)).catch((err) => {
      throw new ERR_STORAGE(`lock of ${key}`, (err as Error).message, { cause: err })
    })
    const token = `${process.pid}@${hostname()}:${randomBytes(6).toString('hex')}`
    for (;;) {
      if (options.signal?.aborted) throw options.signal.reason
      try {
        await fs.writeFile(path, JSON.stringify({ token, created: new Date().toISOString() }), {
          flag: 'wx',
          mode: FILE_MODE,
        })
        break
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
          throw new ERR_STORAGE(`lock of ${key}`, (err as Error).message, { cause: err })
        }
      }
      const stat = await fs.stat(path).catch(() => undefined)
      if (stat && (Date.now() - stat.mtimeMs > LOCK_STALE_MS || (await holderIsDead(path)))) {
        // The holder died without unlocking. Removing by rename first means two waiters cannot both remove
        // a fresh lock that a third process just created.
        const grave = `${path}.stale-${randomBytes(4).toString('hex')}`
        await fs
          .rename(path, grave)
          .then(() => fs.rm(grave, { force: true }))
          .catch(() => {})
        continue
      }
      if (Date.now() >= deadline) throw new ERR_LOCK_TIMEOUT(key)
      await sleep(LOCK_POLL_MS, undefined, options.signal ? { signal: options.signal } : undefined)
    }
    const lost = new AbortController()
    // Refreshed while held; a lock file that is gone or no longer ours (taken over as stale, e.g. after this process
    // was stopped for longer than LOCK_STALE_MS) means the lock is lost.
    const refresh = setInterval(() => {
      const now = new Date()
      fs.readFile(path, 'utf8')
        .then((current) => {
          if (!current.includes(token)) throw new Error('the lock file was taken over')
          return fs.utimes(path, now, now)
        })
        .catch((err: Error) => {
          clearInterval(refresh)
          lost.abort(new ERR_STORAGE(`lock of ${key}`, `lost: ${err.message}`, { cause: err }))
        })
    }, LOCK_REFRESH_MS)
    refresh.unref()
    let released = false
    return {
      lost: lost.signal,
      release: async () => {
        if (released) return
        released = true
        clearInterval(refresh)
        // Only remove the file if it is still ours (a stale takeover may have replaced it).
        const current = await fs.readFile(path, 'utf8').catch(() => '')
        if (current.includes(token)) await fs.rm(path, { force: true }).catch(() => {})
      },
    }
  }
}

async function syncDir(dir: string): Promise<void> {
  let handle: fs.FileHandle | undefined
  try {
    handle = await fs.open(dir, constants.O_RDONLY)
    await handle.sync()
  } catch {
    // Some file systems refuse fsync on a folder; the rename is still atomic there.
  } finally {
    await handle?.close()
  }
}

/** True when the lock file names a process on this host that no longer exists (it died holding the lock). */
/** A temp file this old cannot belong to a write still running. */
const ORPHAN_AGE_MS = 60_000

/**
 * Removes the temp files of `path` left by writers that died mid-write (SIGKILL, power loss). Each is a copy of a
 * record, maybe of a private key; nothing else ever removes them, so a crash-looping process would pile them up.
 */
async function removeOrphans(path: string): Promise<void> {
  const dir = dirname(path)
  const prefix = `${basename(path)}.tmp-`
  for (const name of await fs.readdir(dir)) {
    if (!name.startsWith(prefix)) continue
    const pid = Number(name.slice(prefix.length).split('-')[0])
    if (!Number.isInteger(pid) || pid === process.pid || processAlive(pid)) continue
    const full = join(dir, name)
    const stat = await fs.stat(full).catch(() => undefined)
    if (stat && Date.now() - stat.mtimeMs > ORPHAN_AGE_MS) await fs.rm(full, { force: true })
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH'
  }
}

async function holderIsDead(path: string): Promise<boolean> {
  const content = await fs.readFile(path, 'utf8').catch(() => '')
  const match = /"token":"(\d+)@([^:"]+):/.exec(content)
  if (!match || match[2] !== hostname()) return false
  try {
    process.kill(Number(match[1]), 0)
    return false
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH'
  }
}
