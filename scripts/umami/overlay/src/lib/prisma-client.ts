// Local replacement for the @umami/prisma-client package (see scripts/umami/README.md, P2).
// Same surface as the package (client, log, rawQuery, transaction, getClient), but the
// client runs on Prisma's WASM query compiler through the pg driver adapter, so no native
// query engine is needed.
import { PrismaClient } from '@prisma/client';
import { PrismaPg } from '@prisma/adapter-pg';
import debug from 'debug';

const log = debug('umami:prisma-client');

// One client (and one pg pool) per process, shared by every bundled route.
const PRISMA = Symbol.for('umami.prisma-client');

function getClient(params?: { logQuery?: boolean; queryLogger?: (e: any) => void }) {
  const { logQuery = !!process.env.LOG_QUERY, queryLogger } = params || {};

  const adapter = new PrismaPg({ connectionString: process.env.DATABASE_URL });

  const client = new PrismaClient({
    adapter,
    errorFormat: 'pretty',
    ...(logQuery && { log: [{ emit: 'event', level: 'query' }] }),
  } as any);

  if (logQuery) {
    (client as any).$on('query', queryLogger || log);
  }

  log('Prisma initialized');

  return client;
}

const client: PrismaClient = globalThis[PRISMA] || (globalThis[PRISMA] = getClient());

// Driver adapters take the parameters spread, not as one array.
async function rawQuery(query: string, params: any[] = []): Promise<any> {
  return client.$queryRawUnsafe(query, ...params);
}

async function transaction(input: any, options?: any): Promise<any> {
  return client.$transaction(input, options);
}

export { getClient };

export default { client, log, PRISMA, rawQuery, transaction };
