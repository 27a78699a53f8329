// Parses every ```mermaid block of the Markdown files given as arguments with Mermaid's own
// parser (in Node, on a jsdom window: no browser). Prints one line per file; exits 1 naming
// the file, the line of the block and Mermaid's message when a diagram does not parse.
import { readFileSync } from 'node:fs';
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!DOCTYPE html><body></body>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
globalThis.DOMParser = dom.window.DOMParser;
try { globalThis.navigator = dom.window.navigator; } catch { /* read-only in newer Node */ }
const mermaid = (await import('mermaid')).default;
mermaid.initialize({ startOnLoad: false });

function blocks(text) {
  const found = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== '```mermaid') continue;
    const start = i + 1;
    const body = [];
    for (i++; i < lines.length && lines[i].trim() !== '```'; i++) body.push(lines[i]);
    found.push({ line: start, text: body.join('\n') });
  }
  return found;
}

let failures = 0;
let total = 0;
for (const file of process.argv.slice(2)) {
  const found = blocks(readFileSync(file, 'utf8'));
  if (!found.length) continue;
  for (const block of found) {
    total++;
    try {
      await mermaid.parse(block.text);
    } catch (error) {
      failures++;
      const message = String(error?.message ?? error).split('\n').slice(0, 3).join(' | ');
      console.error(`${file}:${block.line}: the diagram does not parse: ${message}`);
    }
  }
  console.log(`${file}: ${found.length} diagram(s)`);
}
if (failures) {
  console.error(`${failures} of ${total} Mermaid diagram(s) do not parse`);
  process.exit(1);
}
console.log(`all ${total} Mermaid diagram(s) parse`);
