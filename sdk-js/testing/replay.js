// Recordings made with `attune-host sensor run --record DIR`, replayed in the real sandbox.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Runs `attune-host sensor test RECORDING` (the binary named by ATTUNE_HOST, else the one on
 * PATH): the sensor's current code in the real sandbox, answered from the recording. Returns the
 * host's report; throws an AssertionError-like Error naming the first difference in host calls,
 * state writes or payloads.
 */
export function replay(recording) {
  const dir = recording instanceof URL ? fileURLToPath(recording) : String(recording);
  if (!existsSync(path.join(dir, 'recording.json'))) {
    throw new Error(`${dir}: no recording.json (make one with \`attune-host sensor run . --record ${dir}\`)`);
  }
  const host = process.env.ATTUNE_HOST || 'attune-host';
  const result = spawnSync(host, ['sensor', 'test', dir], { encoding: 'utf8' });
  if (result.error) {
    throw new Error(`cannot run ${host} (${result.error.code}): put attune-host on PATH, or name it in ATTUNE_HOST`);
  }
  if (result.status !== 0) {
    const error = new Error((result.stderr || result.stdout).trim());
    error.name = 'AssertionError';
    throw error;
  }
  return result.stdout.trim();
}
