#!/usr/bin/env node
// tact from Node: the sniper attack, Decide, Authorize and a DecideBatch screening.
//
// Usage: node example.js [HOST:PORT]   (or TACT_ADDR; default 127.0.0.1:50051)
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const ROOT = path.resolve(__dirname, '..', '..');
const PROTOS = path.join(ROOT, 'proto');
const SHORT = 2000; // ms: the deadline of one decision (a read: memory only)
// ms: the deadline of a durable write (Authorize, one RecordEvents): it waits for the
// disk to confirm (fsync), which a busy disk can hold for seconds (TACT_WRITE_DEADLINE_S
// sets another, as the project's CI does on machines whose disks stall after a build)
const WRITE = 1000 * Number(process.env.TACT_WRITE_DEADLINE_S || 10);
const LONG = 30000; // ms: the deadline of a batch

// The shipped protos; proto-loader brings google/protobuf's well-known types itself.
const definition = protoLoader.loadSync(
  fs.readdirSync(path.join(PROTOS, 'tact', 'v1')).map((f) => `tact/v1/${f}`),
  { includeDirs: [PROTOS], enums: String, longs: String, defaults: true, oneofs: true },
);
const { ContactPolicy } = grpc.loadPackageDefinition(definition).tact.v1;

const lower = (e) => e.slice(e.indexOf('_') + 1).toLowerCase();
const ts = (date) => ({ seconds: Math.floor(date / 1000), nanos: (date % 1000) * 1e6 });
const when = (t) => new Date(Number(t.seconds) * 1000).toISOString().replace('.000Z', 'Z');

// A unary call as a promise, always with a deadline.
function call(client, method, request, ms) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + ms }, (err, answer) => (err ? reject(err) : resolve(answer)));
  });
}

function show(label, d) {
  const until = d.notBefore ? ` until ${when(d.notBefore)}` : '';
  console.log(`${label}: ${d.verdict.replace('VERDICT_', '')}${until}`);
  for (const r of d.reasons) console.log(`    [${r.ruleId}] ${r.effect.replace('EFFECT_', '')}: ${r.message}`);
  for (const a of d.alternatives) {
    const start = a.notBefore ? `from ${when(a.notBefore)}` : 'now';
    console.log(`    instead: ${lower(a.channel)} for ${lower(a.purpose)}, ${start}: ${a.note}`);
  }
}

// How a caller should treat each status tact returns (README, "Status codes").
function explain(err) {
  const reason = err.metadata?.get('tact-reason')[0] ?? '';
  const retryAfter = err.metadata?.get('retry-after')[0];
  const advice = {
    [grpc.status.INVALID_ARGUMENT]: 'fix the named field; do not retry as is',
    [grpc.status.FAILED_PRECONDITION]: 'another instance owns this customer: ask it',
    [grpc.status.UNAVAILABLE]: 'retry here after a short backoff',
    [grpc.status.RESOURCE_EXHAUSTED]: retryAfter ? `wait ${retryAfter} ms, then retry` : 'split the request',
    [grpc.status.ABORTED]: 'not recorded: do not act, ask again',
    [grpc.status.DEADLINE_EXCEEDED]: 'no answer in time',
  }[err.code] ?? 'unexpected';
  return `${grpc.status[err.code]} ${reason} ${JSON.stringify(err.details)}: ${advice}`;
}

// Authorize is never retried blindly: its ALLOW is recorded and counts. On a timeout or
// a lost connection the authorization may or may not have been recorded; on ABORTED it
// was not. Either way: do not act on it. Ask Decide (read-only, safe to retry) whether
// the outreach is still welcome, and Authorize again only if it is.
async function authorize(client, request) {
  try {
    return await call(client, 'Authorize', request, WRITE);
  } catch (err) {
    if (![grpc.status.DEADLINE_EXCEEDED, grpc.status.UNAVAILABLE, grpc.status.ABORTED].includes(err.code)) throw err;
    console.log(`Authorize failed (${explain(err)}); not acting`);
    const { customerId, channel, purpose } = request;
    show('Decide says', await call(client, 'Decide', { customerId, channel, purpose }, SHORT));
    return null;
  }
}

async function main() {
  const addr = process.argv[2] ?? process.env.TACT_ADDR ?? '127.0.0.1:50051';
  const serviceConfig = fs.readFileSync(path.join(ROOT, 'config', 'grpc-service-config.json'), 'utf8');
  const client = new ContactPolicy(addr, grpc.credentials.createInsecure(), {
    'grpc.service_config': serviceConfig,
    'grpc.enable_retries': 1,
  });
  const run = crypto.randomBytes(3).toString('hex'); // fresh customers each run
  const [ann, ben, cara, dan] = ['ann', 'ben', 'cara', 'dan'].map((n) => `${n}-${run}`);
  const now = Date.now();
  const yearAgo = now - 365 * 86400e3;
  const event = (customerId, what, at, kind) => ({
    eventId: `${customerId}-${what}`, customerId, occurredAt: ts(at), source: 'example-node', ...kind,
  });
  const consent = (customerId, channel, purpose) => event(customerId, `consent-${lower(channel)}-${lower(purpose)}`,
    yearAgo, { consentChanged: { channel, purpose, granted: true, proof: 'signup-form' } });
  const printResults = (r) => r.results.forEach((e) =>
    console.log(`    ${e.eventId}: ${e.status.replace('RECORD_STATUS_', '')} ${e.reason}`.trimEnd()));

  try {
    console.log('== RecordEvents: Ann agreed to sales calls and emails; 5 minutes ago she compared prices');
    const events = [
      consent(ann, 'CHANNEL_CALL', 'PURPOSE_SALES'),
      consent(ann, 'CHANNEL_EMAIL', 'PURPOSE_SALES'),
      event(ann, 'compare', now - 5 * 60e3, { pageViewed: { url: '/car-insurance/compare', category: 'compare' } }),
      consent(ben, 'CHANNEL_SALES_MEETING', 'PURPOSE_SALES'),
      event(ben, 'download', now - 14 * 3600e3, { contentDownloaded: { asset: 'white-paper-fleet-insurance' } }),
      consent(cara, 'CHANNEL_EMAIL', 'PURPOSE_MARKETING'),
    ];
    printResults(await call(client, 'RecordEvents', { events }, LONG));

    console.log('== Decide: may a sales rep call Ann now?');
    const callAnn = { customerId: ann, channel: 'CHANNEL_CALL', purpose: 'PURPOSE_SALES', requestedBy: 'example-node' };
    show(`Decide ${ann} call/sales`, await call(client, 'Decide', callAnn, SHORT));

    console.log('== Authorize: the email tact suggests instead, before sending it');
    const email = { customerId: ann, channel: 'CHANNEL_EMAIL', purpose: 'PURPOSE_SALES',
      campaignId: 'car-insurance', requestedBy: 'example-node' };
    const d = await authorize(client, email);
    if (d) {
      show(`Authorize ${ann} email/sales`, d);
      if (d.verdict === 'VERDICT_ALLOW') {
        console.log(`    (the email goes out; report it with decision id ${d.decisionId})`);
        const sent = { channel: 'CHANNEL_EMAIL', purpose: 'PURPOSE_SALES', campaign: 'car-insurance',
          decisionId: d.decisionId };
        printResults(await call(client, 'RecordEvents',
          { events: [event(ann, 'email-sent', now, { outreachSent: sent })] }, WRITE));
      }
    }

    console.log('== DecideBatch: screen an audience');
    const audience = [
      [ann, 'CHANNEL_CALL', 'PURPOSE_SALES'],
      [ben, 'CHANNEL_SALES_MEETING', 'PURPOSE_SALES'],
      [cara, 'CHANNEL_EMAIL', 'PURPOSE_MARKETING'],
      [dan, 'CHANNEL_EMAIL', 'PURPOSE_MARKETING'],
    ];
    const requests = audience.map(([customerId, channel, purpose]) =>
      ({ customerId, channel, purpose, campaignId: 'spring', requestedBy: 'example-node' }));
    const { decisions } = await call(client, 'DecideBatch', { requests }, LONG);
    decisions.forEach((d, i) => {
      const [c, ch, p] = audience[i];
      show(`Batch ${c} ${lower(ch)}/${lower(p)}`, d);
    });

    console.log('== DecideBatch with an audience: one campaign email, many customers, packed answers');
    const ids = [ann, ben, cara, dan, 'not valid'];
    const { screening } = await call(client, 'DecideBatch', {
      audience: {
        channel: 'CHANNEL_EMAIL', purpose: 'PURPOSE_MARKETING', campaignId: 'spring',
        requestedBy: 'example-node', customerIds: ids,
      },
    }, LONG);
    const errors = new Map(screening.errors.map((e) => [Number(e.index), e]));
    ids.forEach((c, i) => {
      if (errors.has(i)) {
        const e = errors.get(i);
        console.log(`Audience '${c}': not decided: ${e.field}: ${e.message}`);
        return;
      }
      const verdict = screening.verdicts[i].replace(/^VERDICT_/, '');
      const ms = Number(screening.notBeforeUnixMs[i]);
      const until = ms ? ` until ${new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z')}` : '';
      const id = screening.decisionIdPrefix + i.toString(16).padStart(8, '0');
      console.log(`Audience ${c}: ${verdict}${until} (decision ${id})`);
    });
    if (screening.verdicts.length !== ids.length || errors.size !== 1 || !errors.has(4)) {
      throw new Error(`unexpected screening: ${JSON.stringify(screening)}`);
    }
  } catch (err) {
    if (err.code === undefined) throw err;
    console.error(`tact at ${addr}: ${explain(err)}`);
    process.exitCode = 1;
  } finally {
    client.close();
  }
}

main();
