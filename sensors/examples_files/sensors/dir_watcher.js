// Reports each new regular file in `config.dir` once, as an `examples_files.new_file` payload
// {path, name, size, modified_ms}, in name order.  Run: attune-host sensor run sensors/examples_files
//
// "New" means not seen by an earlier poll, remembered in the state store under `seen`. With
// an empty store (the first run) every file already present is reported: a watcher that starts
// after files arrived should not miss them. The store survives restarts, so a restarted sensor
// reports only what arrived meanwhile. `seen` keeps only names still present, so it stays as
// small as the directory, and a file deleted and created again is reported again.
import { fs, state } from '@attune/sensor';

// At most this many payloads per poll (the manifest's limits.max_events_per_poll); the rest
// are reported by the next polls.
const MAX_PER_POLL = 100;

export function* poll(config) {
  const dir = config.dir.replace(/\/+$/, '');
  const seen = new Set(state.getJson('seen', []));
  // The host lists entries sorted by name.
  // Hidden files (.gitkeep, editors' swap files) are not new documents.
  const files = fs.listDir(dir).filter((entry) => !entry.isDir && !entry.name.startsWith('.'));
  const fresh = files.filter((file) => !seen.has(file.name)).slice(0, MAX_PER_POLL);
  for (const file of fresh) {
    yield { path: `${dir}/${file.name}`, name: file.name, size: file.size, modified_ms: file.modifiedMs };
  }
  const reported = new Set(fresh.map((file) => file.name));
  state.setJson('seen', files.map((file) => file.name).filter((name) => seen.has(name) || reported.has(name)));
}
