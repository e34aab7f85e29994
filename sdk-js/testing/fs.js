// The fake of the host's read-only filesystem: granted directories, either in memory or real
// ones on disk, read with the host's rules (paths absolute or relative to the pack directory,
// nothing outside a granted directory, regular files only) and its error messages.
import { lstatSync, readFileSync, readdirSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';

/** Node error codes as the host (Rust's std::io::Error) words them. */
const OS_ERRORS = {
  ENOENT: 'No such file or directory (os error 2)',
  ENOTDIR: 'Not a directory (os error 20)',
  EACCES: 'Permission denied (os error 13)',
};

const denied = (p) => new Error(`${p}: access denied (not under a granted path)`);

/** A file's content as bytes. */
const bytes = (content) => (typeof content === 'string' ? new Uint8Array(Buffer.from(content)) : new Uint8Array(content));

/**
 * Fake filesystem. `tree` maps granted directories (absolute, or relative to `base`) to their
 * contents, `{name: 'text' | Uint8Array | {..a directory..}}`; or pass `dirs`, real directories
 * to grant. `now()` gives the modification time of what `write` changes.
 */
export class FakeFs {
  #base;
  #now;
  #roots; // the granted directories, absolute
  #real; // whether they are read from disk (else from #nodes)
  #nodes = new Map(); // in memory: absolute path -> {dir: true} | {data, modifiedMs}

  constructor({ tree = null, dirs = [], base = process.cwd(), now = () => Date.now() } = {}) {
    this.#base = path.resolve(base);
    this.#now = now;
    this.#real = tree === null;
    this.#roots = (this.#real ? dirs : Object.keys(tree)).map((d) => path.resolve(this.#base, d));
    if (!this.#real) for (const [dir, contents] of Object.entries(tree)) this.#put(path.resolve(this.#base, dir), contents);
  }

  #put(absolute, contents) {
    if (contents !== null && typeof contents === 'object' && !(contents instanceof Uint8Array)) {
      this.#nodes.set(absolute, { dir: true });
      for (const [name, inner] of Object.entries(contents)) this.#put(path.join(absolute, name), inner);
    } else {
      this.#nodes.set(absolute, { data: bytes(contents), modifiedMs: this.#now() });
    }
  }

  /** Writes (or replaces) an in-memory file, its directories made as needed; modified now. */
  write(file, content) {
    if (this.#real) throw new Error('FakeFs.write: this fake reads real directories; write to them with node:fs');
    const absolute = path.resolve(this.#base, file);
    for (let dir = path.dirname(absolute); !this.#nodes.has(dir); dir = path.dirname(dir)) this.#nodes.set(dir, { dir: true });
    this.#nodes.set(absolute, { data: bytes(content), modifiedMs: this.#now() });
  }

  /** Removes an in-memory file or directory (with what is under it). */
  remove(file) {
    const absolute = path.resolve(this.#base, file);
    for (const key of [...this.#nodes.keys()]) if (key === absolute || key.startsWith(absolute + path.sep)) this.#nodes.delete(key);
  }

  /** `p` as an absolute path under a granted directory; throws the host's error if it is under none. */
  #locate(p) {
    const absolute = path.resolve(this.#base, p);
    const root = this.#roots.find((dir) => absolute === dir || absolute.startsWith(dir + path.sep));
    if (!root) throw denied(p);
    if (this.#real) {
      let real;
      try {
        real = realpathSync(absolute);
      } catch {
        return absolute; // missing: reported by the call itself
      }
      const realRoot = realpathSync(root);
      if (real !== realRoot && !real.startsWith(realRoot + path.sep)) throw new Error(`${p}: access denied (leads outside the granted path)`);
      return real;
    }
    return absolute;
  }

  /** The WIT `fs.list-dir`: entries sorted by name. */
  listDir(p) {
    const absolute = this.#locate(p);
    if (this.#real) {
      let names;
      try {
        names = readdirSync(absolute);
      } catch (err) {
        throw new Error(`${p}: ${OS_ERRORS[err.code] ?? err.message}`);
      }
      return names.sort().map((name) => {
        const stat = lstatSync(path.join(absolute, name));
        return { name, isDir: stat.isDirectory(), size: stat.size, modifiedMs: Math.floor(stat.mtimeMs) };
      });
    }
    const node = this.#nodes.get(absolute);
    if (!node) throw new Error(`${p}: ${OS_ERRORS.ENOENT}`);
    if (!node.dir) throw new Error(`${p}: ${OS_ERRORS.ENOTDIR}`);
    return [...this.#nodes.entries()]
      .filter(([key]) => path.dirname(key) === absolute && key !== absolute)
      .map(([key, entry]) => ({
        name: path.basename(key),
        isDir: Boolean(entry.dir),
        size: entry.dir ? 0 : entry.data.length,
        modifiedMs: entry.dir ? 0 : entry.modifiedMs,
      }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** The WIT `fs.read-file`: a regular file's bytes. */
  readFile(p) {
    const absolute = this.#locate(p);
    if (this.#real) {
      let stat;
      try {
        stat = statSync(absolute);
      } catch (err) {
        throw new Error(`${p}: ${OS_ERRORS[err.code] ?? err.message}`);
      }
      if (!stat.isFile()) throw new Error(`${p}: not a regular file (${stat.isDirectory() ? 'a directory' : 'not a file'})`);
      return new Uint8Array(readFileSync(absolute));
    }
    const node = this.#nodes.get(absolute);
    if (!node) throw new Error(`${p}: ${OS_ERRORS.ENOENT}`);
    if (node.dir) throw new Error(`${p}: not a regular file (a directory)`);
    return node.data;
  }
}
