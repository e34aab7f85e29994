// The UTF-8 codec used inside components (QuickJS has no TextEncoder/TextDecoder), checked
// against Node's WHATWG implementation.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeUtf8, encodeUtf8 } from '../src/utf8.js';

test('encodes like TextEncoder, including astral characters and lone surrogates', () => {
  for (const text of ['', 'ascii', 'héllo wörld', '€ 日本語', '😀 𝄞', 'a\ud800b', '\udfff']) {
    assert.deepEqual(encodeUtf8(text), new TextEncoder().encode(text), JSON.stringify(text));
  }
});

test('decodes like a non-fatal TextDecoder, malformed input included', () => {
  const inputs = [
    [0x68, 0xc3, 0xa9],
    [0xf0, 0x9f, 0x98, 0x80],
    [0xff, 0x41], // invalid byte
    [0xc3], // truncated at the end
    [0xe2, 0x82, 0x41], // truncated in the middle
    [0xc0, 0xaf], // overlong
    [0xed, 0xa0, 0x80], // encoded surrogate
    [0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
    [0xe0, 0x80, 0x80],
  ];
  for (const bytes of inputs) {
    const u8 = new Uint8Array(bytes);
    assert.equal(decodeUtf8(u8), new TextDecoder().decode(u8), bytes.join(','));
  }
});

test('round-trips long text across chunk boundaries', () => {
  const text = 'é😀x'.repeat(5000);
  assert.equal(decodeUtf8(encodeUtf8(text)), text);
});
