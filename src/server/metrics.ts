// Prometheus metrics of a map server (--metrics HOST:PORT): an observer of the server's events and of a few counts
// read at scrape time; it decides nothing.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ServerEvent } from './settings.js';

/** What the metrics read from the server when scraped. */
export interface MetricsSource {
  leasesHeld(): number;
  connections(): { authenticated: number; unauthenticated: number };
}

/** Map latencies from 100 µs (a small file, warm) to 10 s (a huge map, or an allocation waiting on zeros). */
const MAP_SECONDS_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class ServerMetrics {
  readonly registry = new Registry();
  private readonly maps: Counter<'volume' | 'mode' | 'path'>;
  private readonly mapSeconds: Histogram<'mode'>;
  private readonly recalls: Counter<'reason'>;
  private readonly revocations: Counter<'after'>;
  private readonly grants: Counter<'node'>;
  private readonly grantedBytes: Counter<'node'>;
  private readonly accepted: Counter;
  private readonly authFailures: Counter;
  private readonly refusals: Counter<'code'>;
  private readonly reloads: Counter<'result'>;

  constructor(source: MetricsSource) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.maps = new Counter({ name: 'fused_maps_total', help: 'Maps served (MAP answered), by volume, mode (read, write) and path (direct, network)', labelNames: ['volume', 'mode', 'path'], registers });
    this.mapSeconds = new Histogram({ name: 'fused_map_duration_seconds', help: 'Time to answer a MAP (lease, sync, FIEMAP; for writes the allocation too)', labelNames: ['mode'], buckets: MAP_SECONDS_BUCKETS, registers });
    new Gauge({ name: 'fused_leases_held', help: 'Map leases held now (including those of ended connections not yet expired)', registers, collect() { this.set(source.leasesHeld()); } });
    this.recalls = new Counter({ name: 'fused_recalls_total', help: 'Leases recalled (! RECALL sent), by reason', labelNames: ['reason'], registers });
    this.revocations = new Counter({ name: 'fused_revocations_total', help: 'Leases that ran out without RETURN, after a recall or after their connection ended', labelNames: ['after'], registers });
    this.grants = new Counter({ name: 'fused_grants_total', help: 'Throttle grants answered, per node', labelNames: ['node'], registers });
    this.grantedBytes = new Counter({ name: 'fused_granted_bytes_total', help: 'Bytes granted, per node', labelNames: ['node'], registers });
    new Gauge({
      name: 'fused_connections', help: 'Client connections now, by state (authenticated, unauthenticated)', labelNames: ['state'], registers,
      collect() {
        const c = source.connections();
        this.set({ state: 'authenticated' }, c.authenticated);
        this.set({ state: 'unauthenticated' }, c.unauthenticated);
      },
    });
    this.accepted = new Counter({ name: 'fused_connections_total', help: 'Client connections accepted', registers });
    this.authFailures = new Counter({ name: 'fused_auth_failures_total', help: 'AUTH with a wrong proof', registers });
    this.refusals = new Counter({ name: 'fused_refusals_total', help: 'Requests (or connections) refused, by error code', labelNames: ['code'], registers });
    this.reloads = new Counter({ name: 'fused_reloads_total', help: 'Configuration reloads (SIGHUP), by result (ok, refused)', labelNames: ['result'], registers });
  }

  observe(e: ServerEvent): void {
    switch (e.event) {
      case 'connect':
        return this.accepted.inc();
      case 'authfail':
        return this.authFailures.inc();
      case 'refused':
        return this.refusals.inc({ code: e.code });
      case 'map':
        this.maps.inc({ volume: e.volume, mode: e.mode, path: e.direct ? 'direct' : 'network' });
        return this.mapSeconds.observe({ mode: e.mode }, e.seconds);
      case 'grant':
        this.grants.inc({ node: e.node });
        return this.grantedBytes.inc({ node: e.node }, e.bytes);
      case 'recall':
        return this.recalls.inc({ reason: e.reason });
      case 'revoke':
        return this.revocations.inc({ after: e.after });
      case 'reload':
        if (e.result !== 'ignored') this.reloads.inc({ result: e.result });
        return;
      default:
        return;
    }
  }
}

/** Serve the registry as Prometheus text on GET /metrics (and /); resolves once listening. */
export function serveMetrics(registry: Registry, host: string, port: number): Promise<{ address: AddressInfo; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' || (path !== '/metrics' && path !== '/')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(err)}\n`),
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, exclusive: true }, () => {
      server.off('error', reject);
      resolve({
        address: server.address() as AddressInfo,
        close: () => new Promise<void>((done) => {
          server.closeAllConnections();
          server.close(() => done());
        }),
      });
    });
  });
}
