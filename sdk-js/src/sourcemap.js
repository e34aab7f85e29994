// Maps the stack of an error thrown in a bundled sensor back to the author's files, through
// the source map `attune-sensor build` embeds. Runs inside QuickJS (and in Node, for the test
// kit), only when an error is reported: the map is decoded on first use, then kept.

const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const DIGIT = Object.fromEntries([...BASE64].map((c, i) => [c, i]));

/**
 * The segments of source map `mappings`, per generated line (0-based): arrays of
 * `[generatedColumn, sourceIndex, originalLine, originalColumn]`, all 0-based and absolute,
 * in column order. Segments without a source are left out.
 */
export function decodeMappings(mappings) {
  const lines = [];
  let source = 0, line = 0, column = 0;
  for (const text of mappings.split(';')) {
    const segments = [];
    let generated = 0;
    for (const segment of text.split(',')) {
      if (segment === '') continue;
      const fields = [];
      let value = 0, shift = 0;
      for (const c of segment) {
        const digit = DIGIT[c];
        value += (digit & 31) << shift;
        if (digit & 32) {
          shift += 5;
        } else {
          fields.push(value & 1 ? -(value >>> 1) : value >>> 1);
          value = 0;
          shift = 0;
        }
      }
      generated += fields[0];
      if (fields.length < 4) continue;
      source += fields[1];
      line += fields[2];
      column += fields[3];
      segments.push([generated, source, line, column]);
    }
    lines.push(segments);
  }
  return lines;
}

/** `{sources, mappings}`: `sources[i]` names source `i` as the author should see it, or null for code that is not theirs. */
export function sourceMapper({ sources, mappings }) {
  let lines = null;
  /** The original `{file, line, column}` (1-based) of a 1-based position in the bundle, or null. */
  return (line, column) => {
    lines ??= decodeMappings(mappings);
    let found = null;
    for (const segment of lines[line - 1] ?? []) {
      if (segment[0] > column - 1) break;
      found = segment;
    }
    if (found === null || sources[found[1]] == null) return null;
    return { file: sources[found[1]], line: found[2] + 1, column: found[3] + 1 };
  };
}

/**
 * The frames of `stack` that lie in `bundle` (the file name the engine gives the bundled code)
 * and map to the author's sources, each rewritten to name that file, line and column; the
 * SDK's own frames and native ones are left out. Null when no frame is left.
 */
export function mapStack(stack, bundle, mapper) {
  const frames = [];
  for (const frame of stack.split('\n')) {
    const at = frame.lastIndexOf(`${bundle}:`);
    if (at === -1) continue;
    const position = /^(\d+):(\d+)/.exec(frame.slice(at + bundle.length + 1));
    const original = position && mapper(Number(position[1]), Number(position[2]));
    if (!original) continue;
    const end = at + bundle.length + 1 + position[0].length;
    frames.push(`${frame.slice(0, at)}${original.file}:${original.line}:${original.column}${frame.slice(end)}`);
  }
  return frames.length ? frames.join('\n') : null;
}
