// tcpdump -d verdicts are cached by expression (docs/agent.md, "Filter checks"): asked for
// again (a resync, a thousand captures with one filter) they cost nothing; a check that
// could not run is retried with back-off and never becomes an "invalid filter".
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { checkBpf, FilterCheckFailed } from '../../src/agent/bpf-check.js';
import { FilterChecks } from '../../src/agent/filter-checks.js';

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

t.test('real tcpdump: one check per expression, however often it is asked', async (t) => {
  const settled: string[] = [];
  const checks = new FilterChecks({ tcpdump: 'tcpdump', onSettled: (e) => settled.push(e) });
  t.teardown(() => checks.stop());
  t.same(checks.verdict('udp port 53'), { kind: 'pending' });
  await until(() => settled.length === 1);
  for (let i = 0; i < 1000; i++) t.equal(checks.verdict('udp port 53').kind, 'valid');
  t.equal(checks.checksRun, 1, 'a thousand asks, one tcpdump -d');
  checks.verdict('udp port 99999');
  await until(() => settled.length === 2);
  t.match(checks.verdict('udp port 99999'), { kind: 'invalid', message: /tcpdump refuses the filter "udp port 99999"/ });
  checks.retain(new Set(['udp port 53']));
  checks.verdict('udp port 99999');
  t.equal(checks.checksRun, 3, 'an expression no capture used any more is checked afresh');
});

t.test('a check that cannot run is pending, retried with back-off, then settles', async (t) => {
  let calls = 0;
  const settled: string[] = [];
  // A test double for the check alone: fork failing with EAGAIN cannot be arranged for a root
  // process (RLIMIT_NPROC does not apply to uid 0), so the failure is injected here.
  const checks = new FilterChecks({
    tcpdump: 'tcpdump', baseRetryMs: 20, maxRetryMs: 1000, onSettled: (e) => settled.push(e),
    check: async (tcpdump, e, ms) => {
      calls++;
      if (calls <= 2) throw new FilterCheckFailed('cannot run tcpdump to check the filter: EAGAIN', false);
      await checkBpf(tcpdump, e, ms);
    },
  });
  t.teardown(() => checks.stop());
  checks.verdict('tcp');
  await until(() => settled.length === 1);
  t.match(checks.verdict('tcp'), { kind: 'pending', message: /EAGAIN; checking again in/ });
  await until(() => checks.verdict('tcp').kind === 'valid');
  t.equal(calls, 3);
});

t.test('classifying tcpdump -d failures', async (t) => {
  await t.rejects(checkBpf('tcpdump', 'udp and port 99999'), { name: 'FilterError' });
  await t.rejects(checkBpf('/nonexistent/tcpdump', 'udp'), { name: 'FilterCheckFailed', missing: true });
  // A check that does not finish in time is no verdict either. Test double: a script that
  // hangs stands in for a tcpdump that hangs (a real one cannot be made to, reliably).
  const dir = await mkdtemp(join(tmpdir(), 'kube-pcap-hung-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const hung = join(dir, 'tcpdump');
  await writeFile(hung, '#!/bin/sh\nexec sleep 5\n', { mode: 0o755 });
  await t.rejects(checkBpf(hung, 'udp', 100), { name: 'FilterCheckFailed', message: /did not finish/ });
});
