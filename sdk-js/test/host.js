// The real host for the tests that run components: target/debug/attune-host (built when
// missing), with the JavaScript runtime built from this SDK as it is now.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = fileURLToPath(new URL('../bin/attune-sensor.js', import.meta.url));
const HOST = path.join(REPO, 'target', 'debug', 'attune-host');

/** Runs `file` with `args`; resolves to {code, stdout, stderr}. */
export function run(file, args, options = {}) {
  return new Promise((resolve) => {
    execFile(file, args, { maxBuffer: 64 << 20, ...options }, (err, stdout, stderr) =>
      resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

let host;
/** The host binary, built first if there is none. */
export function hostBinary() {
  host ??= existsSync(HOST)
    ? Promise.resolve(HOST)
    : run('cargo', ['build', '-p', 'attune-host', '--bin', 'attune-host'], { cwd: REPO }).then(({ code, stderr }) => {
        if (code !== 0) throw new Error(`cargo build -p attune-host failed:\n${stderr}`);
        return HOST;
      });
  return host;
}

let runtimes;
/** A directory holding javascript.wasm built from this SDK (the runtime behind plain-source sensors). */
export function runtimesDir() {
  runtimes ??= (async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'attune-runtimes-'));
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
    const { code, stderr } = await run(process.execPath, [CLI, 'build-runtime', '-o', path.join(dir, 'javascript.wasm')]);
    if (code !== 0) throw new Error(`build-runtime failed:\n${stderr}`);
    return dir;
  })();
  return runtimes;
}

/** Runs `attune-host args` in `cwd`, with the runtime above and a compile cache that outlives the run. */
export async function attuneHost(args, cwd) {
  const env = {
    ...process.env,
    ATTUNE_RUNTIMES_DIR: await runtimesDir(),
    ATTUNE_CACHE_DIR: process.env.ATTUNE_CACHE_DIR ?? path.join(REPO, 'target', 'attune-cache'),
  };
  return run(await hostBinary(), args, { cwd, env });
}
