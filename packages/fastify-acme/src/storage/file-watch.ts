// FileStorage's change notifications: inotify (fs.watch) on every folder under a watched prefix, one watcher per
// folder because recursive fs.watch is unreliable on Linux in Node 20. Folders that appear later (a first
// certificate creates `certificates/`) are watched as they appear, and the files already in them reported, since
// they may have been written before the watcher was set. Only final keys are reported: put() writes a temp file
// and renames it over the key, and lock files are no keys.
import { type FSWatcher, mkdirSync, readdirSync, statSync, watch } from 'node:fs'
import { basename, join, relative, sep } from 'node:path'
import type { StorageChange, StorageWatch } from './index.js'

/** put()'s temp files, lock files and the lock files being taken over: never keys. */
const NOT_A_KEY = /\.tmp-\d+-[0-9a-f]{12}$|\.lock$|\.lock\.stale-[0-9a-f]+$/
/** How long after a watcher failed its folder is watched again (then a 'resync' says what may have been missed). */
const REWATCH_MS = 1_000

/**
 * Watches `root` for changes to keys under `prefix`. The folder the prefix names is created (0700) when missing,
 * so there is always a folder to watch; a failure to create or watch it is reported as 'unreachable' and retried.
 */
export function watchFolder(
  root: string,
  prefix: string,
  listener: (change: StorageChange) => void,
  dirMode: number,
): StorageWatch {
  const watchers = new Map<string, FSWatcher>()
  const pending = new Set<string>()
  let flushing = false
  let closed = false
  let retry: NodeJS.Timeout | undefined
  let down = false
  const base = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : ''
  const baseDir = base === '' ? root : join(root, ...base.split('/'))

  const keyOf = (path: string) => relative(root, path).split(sep).join('/')
  // A folder matters when keys under the prefix can be in it.
  const relevant = (dir: string) => {
    if (dir === root) return true
    const key = `${keyOf(dir)}/`
    return key.startsWith(prefix) || prefix.startsWith(key)
  }
  // Changes are passed on once per key per turn of the event loop: a rename shows as several inotify events.
  const report = (key: string) => {
    if (closed || !key.startsWith(prefix)) return
    pending.add(key)
    if (flushing) return
    flushing = true
    setImmediate(() => {
      flushing = false
      const keys = [...pending]
      pending.clear()
      if (closed) return
      for (const k of keys) listener({ type: 'changed', key: k })
    })
  }

  /** Watches `dir` and the folders under it; with `announce`, reports the files found (they are new). */
  const add = (dir: string, announce: boolean): void => {
    if (closed || watchers.has(dir) || !relevant(dir)) return
    let watcher: FSWatcher
    try {
      watcher = watch(dir, { persistent: false }, (_event, name) => onEvent(dir, name))
    } catch (err) {
      // Gone again (ENOENT) is the parent's business; anything else (ENOSPC: no inotify watches left) is retried.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') failed(err as Error)
      return
    }
    watchers.set(dir, watcher)
    watcher.on('error', (err) => {
      drop(dir)
      if (statOf(dir) !== undefined) failed(err)
    })
    let entries: import('node:fs').Dirent[]
    try {
      entries = readdirSync(dir, { withFileTypes: true })
    } catch {
      return
    }
    for (const entry of entries) {
      const full = join(dir, entry.name)
      if (entry.isDirectory()) add(full, announce)
      else if (announce && entry.isFile() && !NOT_A_KEY.test(entry.name)) report(keyOf(full))
    }
  }

  const drop = (dir: string) => {
    for (const [path, watcher] of watchers) {
      if (path === dir || path.startsWith(`${dir}${sep}`)) {
        watcher.close()
        watchers.delete(path)
      }
    }
  }

  const onEvent = (dir: string, name: string | Buffer | null) => {
    // Closed, or this folder's watch was dropped (events already queued for it still arrive).
    if (closed || !watchers.has(dir)) return
    if (name === null) {
      // inotify did not say what changed (its queue overflowed): everything may have.
      listener({ type: 'resync' })
      return
    }
    const entry = name.toString()
    if (NOT_A_KEY.test(entry)) return
    // A watched folder removed (inotify names the folder itself). The store's own folder gone (a wiped cache) is
    // reported and watched again once it can be re-made; a sub-folder's removal is its parent's event.
    if (entry === basename(dir) && statOf(dir) === undefined) {
      if (dir === baseDir) {
        drop(dir)
        failed(new Error(`the watched folder ${dir} was removed`))
      }
      return
    }
    const full = join(dir, entry)
    const stat = statOf(full)
    if (stat?.isDirectory()) add(full, true)
    else if (stat === undefined && watchers.has(full)) drop(full)
    else report(keyOf(full))
  }

  const start = () => {
    try {
      mkdirSync(baseDir, { recursive: true, mode: dirMode })
    } catch (err) {
      failed(err as Error)
      return false
    }
    add(baseDir, false)
    // The folders between the root and the prefix's folder are not watched: they are created above, and a folder
    // removed from under a running store is a fault (reported by its watcher), not a change.
    return watchers.has(baseDir)
  }

  const failed = (error: Error) => {
    if (closed) return
    if (!down) listener({ type: 'unreachable', error })
    down = true
    clearTimeout(retry)
    retry = setTimeout(() => {
      drop(baseDir)
      if (!start()) return
      down = false
      listener({ type: 'resync' })
    }, REWATCH_MS)
    retry.unref()
  }

  start()
  return {
    close() {
      closed = true
      clearTimeout(retry)
      for (const watcher of watchers.values()) watcher.close()
      watchers.clear()
      pending.clear()
    },
  }
}

function statOf(path: string) {
  try {
    return statSync(path)
  } catch {
    return undefined
  }
}
