// Builds a JavaScript strategy component with componentize-js:
//
//   node build.mjs <componentize-js entry> <app.js> <wit dir> <out.wasm>
//
// The entry is the file of @bytecodealliance/componentize-js's `componentize` export, so the
// tool can live outside the repository. wasi:http and the fetch event are left out: a
// strategy has no network, and the dpone sandbox links no wasi:http.

import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [entry, app, wit, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node build.mjs <componentize-js entry> <app.js> <wit dir> <out.wasm>');
  process.exit(2);
}
const { componentize } = await import(pathToFileURL(resolve(entry)).href);
const { component } = await componentize({
  sourcePath: resolve(app),
  witPath: resolve(wit),
  worldName: 'strategy',
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
