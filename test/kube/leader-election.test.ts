// Leader election on a real coordination.k8s.io Lease (docs/status.md, "One writer"):
// never two leaders, a released Lease is taken at the next retry, and a holder that
// stopped renewing is waited out for a whole lease duration on the candidate's own clock.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { connect } from '../../src/kube/config.js';
import { LeaderElector } from '../../src/kube/leader-election.js';
import { createLogger } from '../../src/log/logger.js';
import { cluster } from '../harness/cluster.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const kube = await connect(c.info.kubeconfig);
t.teardown(() => kube.close());
const ns = await c.createNamespace('lease');
const log = createLogger('warn', 'leader-election-test');
const timing = { leaseDurationMs: 5000, renewDeadlineMs: 3000, retryPeriodMs: 500 };

function elector(name: string, identity: string): LeaderElector {
  const e = new LeaderElector(kube, { namespace: ns, name, identity, log, ...timing });
  t.teardown(() => e.stop());
  return e;
}

t.test('two candidates: exactly one leads, the other takes over at once when the Lease is released', async (t) => {
  const lease = `race-${randomBytes(3).toString('hex')}`;
  const a = elector(lease, 'a');
  const b = elector(lease, 'b');
  a.start();
  b.start();
  const first = await waitFor(() => (a.isLeader ? a : b.isLeader ? b : undefined), { what: 'a leader', timeoutMs: 10_000, intervalMs: 20 });
  const other = first === a ? b : a;
  let both = 0;
  const watch = setInterval(() => (a.isLeader && b.isLeader ? both++ : undefined), 10);
  // Several renew periods with both candidates trying.
  await waitFor(async () => {
    const l = await kube.request<{ spec: { renewTime: string; leaseTransitions?: number } }>({ path: `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases/${lease}` });
    return Date.now() - Date.parse(l.spec.renewTime) < 1000 && first.isLeader && !other.isLeader ? l : undefined;
  }, { what: 'the leader to renew', timeoutMs: 5000, intervalMs: 200 });
  const released = Date.now();
  await first.stop();
  await waitFor(() => other.isLeader, { what: 'the other candidate to lead', timeoutMs: 5000, intervalMs: 10 });
  const handoverMs = Date.now() - released;
  clearInterval(watch);
  t.equal(both, 0, 'never two leaders at once');
  t.ok(handoverMs < timing.leaseDurationMs, `released: taken over in ${handoverMs} ms, before a lease duration (${timing.leaseDurationMs} ms)`);
  t.comment(`handover after release: ${handoverMs} ms`);
});

t.test('a holder that stopped renewing is waited out for a lease duration measured locally', async (t) => {
  const lease = `dead-${randomBytes(3).toString('hex')}`;
  // A holder that crashed: its record says it renewed just now, with the test's duration.
  await kube.request({
    method: 'POST',
    path: `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases`,
    body: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: lease }, spec: { holderIdentity: 'crashed', leaseDurationSeconds: 3, renewTime: new Date().toISOString().replace('Z', '000Z'), leaseTransitions: 4 } },
  });
  const b = elector(lease, 'b');
  const started = Date.now();
  b.start();
  await waitFor(() => b.isLeader, { what: 'the candidate to take the abandoned Lease', timeoutMs: 10_000, intervalMs: 20 });
  const tookMs = Date.now() - started;
  t.ok(tookMs >= 3000, `not before the lease duration (${tookMs} ms)`);
  t.ok(tookMs < 6000, `soon after it (${tookMs} ms)`);
  const l = await kube.request<{ spec: { holderIdentity: string; leaseTransitions: number } }>({ path: `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases/${lease}` });
  t.equal(l.spec.holderIdentity, 'b');
  t.equal(l.spec.leaseTransitions, 5, 'a change of holder is counted');
});
