// What the console's browser tests share: a real `attune-host serve` (the debug binary, SQLite
// in a temp dir, the example packs plus the crashing fixture pack, a free port) and headless
// Chromium (Debian's, /usr/bin/chromium, or $CHROMIUM) driven by playwright-core.
import { spawn, execFileSync } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = process.env.ATTUNE_HOST_BIN || path.join(repo, 'target/debug/attune-host');
export const screenshots = path.join(repo, 'target/console-screenshots');

/** Resolves when `check()` returns something truthy (polled every 100 ms), or throws after
 *  `ms` naming `what`. */
export async function until(what, check, ms = 30_000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}${last ? ` (last error: ${last.message})` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts `serve` on a copy of the example packs and `tests/console/fixtures`, the crashing
 *  sensor told to crash; returns what the tests need, with `stop()`. */
export async function startHost() {
  const work = await mkdtemp(path.join(tmpdir(), 'attune-console-'));
  const packs = path.join(work, 'packs');
  await mkdir(packs);
  for (const pack of await readdir(path.join(repo, 'sensors'))) {
    await cp(path.join(repo, 'sensors', pack), path.join(packs, pack), { recursive: true });
  }
  await rm(path.join(packs, 'examples_files/inbox'), { recursive: true, force: true });
  await mkdir(path.join(packs, 'examples_files/inbox'));
  await cp(path.join(repo, 'tests/console/fixtures'), packs, { recursive: true });
  await writeFile(path.join(packs, 'console_crash/ctl/crash'), 'crash\n');

  const port = await freePort();
  const data = path.join(work, 'data');
  const log = [];
  const child = spawn(bin, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', data, '--packs', packs,
    '--quarantine-after', '2', '--backoff-initial-ms', '200', '--backoff-max-ms', '1000'], {
    env: {
      ...process.env,
      ATTUNE_LOG: 'info',
      ATTUNE_CACHE_DIR: process.env.ATTUNE_CACHE_DIR || path.join(repo, 'target/attune-cache'),
      ATTUNE_RUNTIMES_DIR: process.env.ATTUNE_RUNTIMES_DIR || path.join(repo, 'build/runtimes'),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (chunk) => log.push(chunk.toString()));
  child.stderr.on('data', (chunk) => log.push(chunk.toString()));
  let exited = null;
  child.on('exit', (code) => { exited = code; });

  const url = `http://127.0.0.1:${port}`;
  const admin = await until('serve writes its admin token and is ready', async () => {
    if (exited !== null) throw new Error(`attune-host serve exited (${exited}):\n${log.join('')}`);
    const token = (await readFile(path.join(data, 'admin.token'), 'utf8')).trim();
    return (await fetch(`${url}/ready`)).ok && token;
  }, 90_000).catch((e) => {
    child.kill();
    throw new Error(`${e.message}\n${log.join('')}`);
  });
  // A readonly token, made as an operator would.
  const readonly = execFileSync(bin, ['token', 'create', '--scope', 'readonly', '--name', 'console-test',
    '--database-url', `sqlite://${path.join(data, 'attune.db')}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
    .trim().split('\n').pop();

  const api = async (method, route, token = admin) => {
    const response = await fetch(`${url}${route}`, { method, headers: { Authorization: `Bearer ${token}` } });
    return { status: response.status, body: await response.json().catch(() => null) };
  };
  return {
    url, admin, readonly, packs, api, log: () => log.join(''),
    async stop() {
      if (exited === null) {
        const gone = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await gone;
      }
      await rm(work, { recursive: true, force: true });
    },
  };
}

/** Headless Chromium: Debian's package (`apt-get install chromium`), not a downloaded build. */
export async function launchBrowser() {
  return chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true });
}

/** A page of the console at `width` px, signed in with `token`, with page errors collected. */
export async function signedIn(browser, host, token, width = 1280) {
  const context = await browser.newContext({ viewport: { width, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(host.url);
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('nav').waitFor();
  return { page, context, errors };
}

export async function screenshot(page, name) {
  await mkdir(screenshots, { recursive: true });
  await page.screenshot({ path: path.join(screenshots, `${name}.png`), fullPage: true });
}
