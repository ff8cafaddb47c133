// Parse Mermaid texts with Mermaid's own parser: reads a JSON array of strings
// on stdin, prints a JSON array of {ok, type, error} in the same order.
// mermaid.parse() runs the diagram's grammar and its database calls; its
// sanitizer (DOMPurify) needs a DOM, which jsdom provides. Nothing is rendered.
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
mermaid.initialize({ startOnLoad: false, securityLevel: 'strict' });

let input = '';
for await (const chunk of process.stdin) input += chunk;
const results = [];
for (const text of JSON.parse(input)) {
  try {
    const parsed = await mermaid.parse(text);
    results.push({ ok: true, type: parsed.diagramType, error: null });
  } catch (error) {
    results.push({ ok: false, type: null, error: String(error && error.message || error) });
  }
}
process.stdout.write(JSON.stringify(results));
