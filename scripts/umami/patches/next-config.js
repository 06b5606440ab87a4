#!/usr/bin/env node
// Edits umami's next.config.js (see scripts/umami/README.md, P7):
//   node next-config.js next.config.js
'use strict';

const fs = require('fs');

const file = process.argv[2] || 'next.config.js';
let src = fs.readFileSync(file, 'utf8');

const anchor = "  output: 'standalone',\n";
if (!src.includes(anchor)) {
  throw new Error(`anchor not found in ${file}: ${JSON.stringify(anchor)}`);
}

// Next 14.2 turns a useSearchParams() outside <Suspense> into a build error on statically
// rendered pages; Next 14.0 (which umami 2.10 was written for) only warned.
src = src.replace(
  anchor,
  `${anchor}  experimental: {\n    missingSuspenseWithCSRBailout: false,\n  },\n`,
);

fs.writeFileSync(file, src);
