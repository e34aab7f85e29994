// UTF-8 for the QuickJS runtime inside sensor components, which has no TextEncoder/TextDecoder.

/** Encodes a string as UTF-8; lone surrogates become U+FFFD, as TextEncoder does. */
export function encodeUtf8(text) {
  const bytes = [];
  for (const ch of text) {
    let cp = ch.codePointAt(0);
    if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd;
    if (cp < 0x80) bytes.push(cp);
    else if (cp < 0x800) bytes.push(0xc0 | (cp >> 6), 0x80 | (cp & 63));
    else if (cp < 0x10000) bytes.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63));
    else bytes.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 63), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63));
  }
  return new Uint8Array(bytes);
}

/**
 * Decodes UTF-8 bytes; each malformed sequence becomes one U+FFFD, as a non-fatal TextDecoder
 * does (WHATWG "maximal subpart" rule).
 */
export function decodeUtf8(bytes) {
  // Code points are gathered in chunks: one fromCodePoint call per chunk, not per character.
  const parts = [];
  let chunk = [];
  const put = (cp) => {
    chunk.push(cp);
    if (chunk.length === 4096) { parts.push(String.fromCodePoint(...chunk)); chunk = []; }
  };
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i];
    // Sequence length and the allowed range of the second byte (excludes overlongs and surrogates).
    let n = 0, lo = 0x80, hi = 0xbf;
    if (b < 0x80) n = 0;
    else if (b >= 0xc2 && b <= 0xdf) n = 1;
    else if (b >= 0xe0 && b <= 0xef) { n = 2; if (b === 0xe0) lo = 0xa0; if (b === 0xed) hi = 0x9f; }
    else if (b >= 0xf0 && b <= 0xf4) { n = 3; if (b === 0xf0) lo = 0x90; if (b === 0xf4) hi = 0x8f; }
    else { put(0xfffd); i++; continue; }
    let cp = n === 0 ? b : b & (0x3f >> n);
    let j = 1;
    for (; j <= n; j++) {
      const c = bytes[i + j];
      if (c === undefined || c < lo || c > hi) break;
      cp = (cp << 6) | (c & 63);
      lo = 0x80; hi = 0xbf;
    }
    if (j <= n) { put(0xfffd); i += j; continue; }
    put(cp);
    i += n + 1;
  }
  parts.push(String.fromCodePoint(...chunk));
  return parts.join('');
}
