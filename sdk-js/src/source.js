// Plain-source sensors: ES-module-style source text evaluated inside the runtime component.
//
// The runtime cannot load real ES modules at run time (QuickJS modules are resolved when the
// component is built), so `moduleToFunction` rewrites the two module features a sensor file
// needs into the body of a function of `__attune_sdk` (the SDK module), keeping every line on
// its line:
//
//   import { log, state as kv } from '@attune/sensor'; -> const { log, state: kv } = __attune_sdk;
//   import * as sdk from '@attune/sensor';              -> const sdk = __attune_sdk;
//   export function* poll(config) {..}                  -> function* poll(config) {..}
//   export const x = 1; export class C {..}             -> const x = 1; class C {..}
//   export { a, b as c };                               -> (removed)
//
// The body ends by returning the exported names, which stand in for the module namespace. An
// export declaration exports its first name only (`export let a, b` exports `a`). Only
// statements that start a line are seen, so such lines inside template literals or comments are
// rewritten too. Any other import (another package, a relative file, a default import) or
// export form (`export default`, `export * from`, destructuring) is an error naming its line:
// such sensors go through `attune-sensor build`, which bundles real modules.

/** Name of the function parameter that holds the SDK module. */
const SDK = '__attune_sdk';

const IMPORT = /^[ \t]*import\b([^'";]*?)(['"])([^'"\n]*)\2[ \t]*;?/gm;
const EXPORT = /^[ \t]*export\b[ \t]*(?:((?:async[ \t]+)?function\b[ \t]*\*?|class\b|const\b|let\b|var\b)[ \t]*([\w$]+)|\{([^}]*)\}[ \t]*;?)?/gm;

/** A SyntaxError whose message ends with where it is, `(<filename>, line N)`. */
function sourceError(message, filename, line) {
  return new SyntaxError(`${message} (${filename}${line ? `, line ${line}` : ''})`);
}

/** `replacement`, padded with the newlines `original` had so later lines keep their numbers. */
function keepLines(original, replacement) {
  const missing = original.split('\n').length - replacement.split('\n').length;
  return replacement + '\n'.repeat(missing);
}

/** The 1-based line of `offset` in `text`. */
const lineAt = (text, offset) => text.slice(0, offset).split('\n').length;

/** `a, b as c` (the inside of `{..}`) as `[[name, alias], ..]`: `[['a', 'a'], ['b', 'c']]`. */
const bindings = (list) =>
  list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const [name, alias = name] = s.split(/\s+as\s+/);
      return [name, alias];
    });

/** Rewrites sensor module source into a function body taking `__attune_sdk` (see above). */
export function moduleToFunction(source, filename) {
  const fail = (message, offset) => {
    throw sourceError(message, filename, lineAt(source, offset));
  };
  let body = source.replace(IMPORT, (statement, clause, _quote, specifier, offset) => {
    if (specifier !== '@attune/sensor') fail('imports other than @attune/sensor need `attune-sensor build`', offset);
    const names = clause.replace(/\bfrom\s*$/, '').trim();
    const star = /^\*\s*as\s+([\w$]+)$/.exec(names);
    let declaration;
    if (star) declaration = `const ${star[1]} = ${SDK};`;
    else if (/^\{[^}]*\}$/.test(names)) {
      const pairs = bindings(names.slice(1, -1)).map(([name, alias]) => (name === alias ? name : `${name}: ${alias}`));
      declaration = `const { ${pairs.join(', ')} } = ${SDK};`;
    } else fail("import from @attune/sensor as `import { log, state } from '@attune/sensor'`", offset);
    return keepLines(statement, declaration);
  });
  const exported = []; // [local name, exported name]
  body = body.replace(EXPORT, (statement, _keyword, name, list, offset) => {
    if (name) {
      exported.push([name, name]);
      return statement.replace(/export\b[ \t]*/, '');
    }
    if (list === undefined) fail('unsupported export; use `export function`, `export const` or `export { .. }`', offset);
    exported.push(...bindings(list));
    return keepLines(statement, '');
  });
  const namespace = exported.map(([local, name]) => `${JSON.stringify(name)}: ${local}`).join(', ');
  return `${body}\nreturn { ${namespace} };`;
}

/**
 * Evaluates sensor source and returns its exports. Runs the sensor's top-level code.
 * `sdk` is the @attune/sensor module its imports read from.
 */
export function evaluateSource(source, filename, sdk) {
  // Indirect eval of a function expression (rather than `new Function`) keeps QuickJS's line
  // numbers equal to the file's: the wrapper opens on the sensor's first line.
  const wrapped = `(function (${SDK}) {"use strict";${moduleToFunction(source, filename)}\n})`;
  let factory;
  try {
    factory = (0, eval)(wrapped);
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    // QuickJS puts the position in the first stack frame: `at <input>:LINE:COLUMN`. Past the
    // file's last line is the wrapper's closing: the file ended inside a block, string or comment.
    const line = Number(/<input>:(\d+)/.exec(err.stack ?? '')?.[1]);
    const lines = source.replace(/\n$/, '').split('\n').length;
    throw line > lines ? sourceError('unexpected end of input', filename, lines) : sourceError(err.message, filename, line);
  }
  return factory(sdk);
}

/**
 * The frames of `stack` that are in the sensor's source, which QuickJS names `<input>`, under
 * the sensor's file name; the runtime's own frames are left out. Null when there are none.
 */
export function sourceTraceback(stack, filename) {
  const frames = stack.split('\n').filter((frame) => frame.includes('<input>'));
  return frames.length ? frames.map((frame) => frame.replaceAll('<input>', filename)).join('\n') : null;
}
