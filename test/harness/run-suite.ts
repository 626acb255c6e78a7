// The test suite's runner (what `npm test` and `.ci/run` execute inside the sandbox), in
// three phases:
//   0. the fast tier (test/fast, test/unit, test/selector): no API server, no network
//      namespace, seconds in all; `npm run test:fast` runs only this phase;
//   1. every other test but the real cluster's, against one shared control plane, two files
//      at a time;
//   2. the real cluster's (test/cluster: kubelets, containerd, our images, the chart), one
//      file at a time against one cluster brought up here (test/cluster/real-cluster.ts).
// It prints what failed and a final `N passed, N failed` line, and stops everything it
// started.
//
//   node dist/test/harness/run-suite.js [--fast | tap file arguments...]
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { Parser, type Result } from 'tap-parser';
import { stringify } from 'tap-yaml';
import { RealCluster } from '../cluster/real-cluster.js';
import { TeardownList } from '../cluster/teardown.js';
import { ControlPlane, REPO_ROOT } from './control-plane.js';

interface FileResult {
  file: string;
  passed: number;
  failed: { name: string; diag: unknown }[];
  skipped: string[];
  ok: boolean;
  seconds: number;
}

const CLUSTER_TESTS = join(REPO_ROOT, 'dist', 'test', 'cluster');
const isClusterTest = (f: string): boolean => /(^|\/)test\/cluster\//.test(f);
/** The fast tier: nothing but this process's own servers, pcap files and tcpdump -d. */
const isFastTest = (f: string): boolean => /(^|\/)test\/(fast|unit|selector)\//.test(f);

/**
 * About how long the slow files take (seconds, a fresh machine's run); the others take
 * about 6. Phase 1 runs two tap processes side by side, one file at a time each, on halves
 * of equal estimated length: tap itself runs files in alphabetical order, and with two jobs
 * the plugin's long files came last and left one job idle for minutes (phase 1 took 19
 * minutes for 13.5 minutes of tests per job). Only the split depends on these figures.
 */
const ESTIMATED_SECONDS: Record<string, number> = {
  'gateway/live-stream': 189, 'plugin/workflow': 123, 'agent/rotation': 81, 'plugin/extcap': 74,
  'gateway/pinned-download': 67, 'agent/restart': 63, 'agent/wedge': 63, 'plugin/package': 61,
  'plugin/credentials': 59, 'agent/capture-cost': 52, 'plugin/gateway-access': 51, 'agent/budgets': 46,
  'agent/capture-limits': 43, 'gateway/zip64': 42, 'agent/capture-churn': 41, 'gateway/oidc': 33,
  'e2e/storefront-dns': 33, 'export/export-controller': 115, 'export/s3-upload': 18, 'gateway/api-outage': 33, 'gateway/ingress-nginx': 31,
};

function estimate(file: string): number {
  const m = /dist\/test\/(.+)\.test\.js$/.exec(file);
  return (m && ESTIMATED_SECONDS[m[1]!]) || 6;
}

/** Every test file under dist/test, relative to the repository. */
async function testFiles(): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, e.name);
      if (e.isDirectory()) await walk(path);
      else if (e.name.endsWith('.test.js')) found.push(relative(REPO_ROOT, path));
    }
  };
  await walk(join(REPO_ROOT, 'dist', 'test'));
  return found.sort();
}

/** Every test file but the cluster's and the fast tier's, in two halves of about equal length (longest first, each to the shorter half). */
async function phaseOneHalves(): Promise<[string[], string[]]> {
  const halves: [string[], string[]] = [[], []];
  const load = [0, 0];
  for (const f of (await testFiles()).filter((x) => !isClusterTest(x) && !isFastTest(x)).sort((a, b) => estimate(b) - estimate(a) || a.localeCompare(b))) {
    const i = load[0]! <= load[1]! ? 0 : 1;
    halves[i].push(f);
    load[i]! += estimate(f);
  }
  return halves;
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const strict = process.env.CI === 'true';
  const tmp = join(process.env.KUBE_PCAP_TMP ?? '/tmp', 'kube-pcap-test');
  await mkdir(tmp, { recursive: true });
  await mkdir(join(REPO_ROOT, '.tap'), { recursive: true });

  const results: FileResult[] = [];
  let tapFailed = false;
  // .ci/run runs the fast tier on its own first and says so (KUBE_PCAP_FAST_DONE=1).
  if (args[0] === '--fast' || (args.length === 0 && process.env.KUBE_PCAP_FAST_DONE !== '1')) {
    process.stdout.write('the fast tier (test/fast, test/unit, test/selector)\n');
    tapFailed = (await runTap(['--jobs=2', ...(await testFiles()).filter(isFastTest)], {}, results, 'last-run-fast.tap')) !== 0;
    if (args[0] === '--fast') return summarize(results, strict, tapFailed);
  }
  const plain = args.filter((f) => !isClusterTest(f));
  const clusterFiles = args.length === 0
    ? (await readdir(CLUSTER_TESTS)).filter((f) => f.endsWith('.test.js')).sort().map((f) => relative(REPO_ROOT, join(CLUSTER_TESTS, f)))
    : args.filter(isClusterTest);
  if (args.length === 0) {
    const halves = await phaseOneHalves();
    const codes = await withControlPlane(tmp, async (infoFile) => await Promise.all(halves.map((files, i) => runTap(['--jobs=1', ...files], { KUBE_PCAP_TEST_CLUSTER: infoFile }, results, `last-run-${i + 1}.tap`))));
    tapFailed = codes.some((code) => code !== 0) || tapFailed;
  } else if (plain.length > 0) {
    tapFailed = (await withControlPlane(tmp, (infoFile) => runTap(plain, { KUBE_PCAP_TEST_CLUSTER: infoFile }, results, 'last-run.tap'))) !== 0;
  }
  if (clusterFiles.length > 0) {
    tapFailed = (await withRealCluster(tmp, results, (infoFile) => runTap(['--jobs=1', ...clusterFiles], { KUBE_PCAP_REAL_CLUSTER: infoFile }, results, 'last-run-cluster.tap'))) !== 0 || tapFailed;
  }
  return summarize(results, strict, tapFailed);
}

/** Phase 1's shared control plane around `body`. */
async function withControlPlane<T>(tmp: string, body: (infoFile: string) => Promise<T>): Promise<T> {
  const sandboxed = process.env.KUBE_PCAP_SANDBOX === '1';
  process.stdout.write('starting the test control plane (etcd + kube-apiserver)...\n');
  const cp = await ControlPlane.start({
    bindAddress: sandboxed ? '0.0.0.0' : '127.0.0.1',
    extraAddresses: sandboxed && process.env.KUBE_PCAP_BRIDGE_IP ? [process.env.KUBE_PCAP_BRIDGE_IP] : [],
  });
  process.stdout.write(`control plane ready in ${(cp.startupMs / 1000).toFixed(1)} s at ${cp.info.server}\n`);
  const infoFile = join(tmp, 'cluster.json');
  await writeFile(infoFile, JSON.stringify(cp.info, null, 2));

  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await cp.stop();
  };
  const handlers = (['SIGINT', 'SIGTERM'] as const).map((sig) => {
    const handler = (): void => {
      process.stdout.write(`\n${sig}: stopping the control plane\n`);
      void stop().finally(() => process.exit(130));
    };
    process.once(sig, handler);
    return [sig, handler] as const;
  });
  try {
    return await body(infoFile);
  } finally {
    for (const [sig, handler] of handlers) process.off(sig, handler);
    await stop();
  }
}

/** Phase 2's real cluster around `body`; a cluster that cannot come up is one failure. */
async function withRealCluster(tmp: string, results: FileResult[], body: (infoFile: string) => Promise<number | null>): Promise<number | null> {
  process.stdout.write('\nbringing up the real cluster (control plane, 2 nodes with containerd + kubelet, our images)...\n');
  const started = Date.now();
  const down = new TeardownList();
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    for (const err of await down.run()) process.stdout.write(`cluster teardown: ${err.message}\n`);
  };
  const onSignal = (sig: string) => (): void => {
    process.stdout.write(`\n${sig}: stopping the real cluster\n`);
    void stop().finally(() => process.exit(130));
  };
  const handlers = (['SIGINT', 'SIGTERM'] as const).map((sig) => [sig, onSignal(sig)] as const);
  for (const [sig, handler] of handlers) process.once(sig, handler);
  try {
    const workDir = join(tmp, 'real-cluster');
    await mkdir(workDir, { recursive: true });
    let cluster: RealCluster;
    try {
      cluster = await RealCluster.up(down, { workDir, narrator: { step: (s) => process.stdout.write(`  ${s}\n`), say: (s) => process.stdout.write(`    ${s}\n`) } });
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      process.stdout.write(`✗ the real cluster did not come up: ${message}\n`);
      results.push({ file: 'test/cluster (bring-up)', passed: 0, failed: [{ name: `the real cluster comes up: ${message}`, diag: undefined }], skipped: [], ok: false, seconds: (Date.now() - started) / 1000 });
      return 1;
    }
    process.stdout.write(`real cluster ready in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    const infoFile = join(tmp, 'real-cluster.json');
    await writeFile(infoFile, JSON.stringify(cluster.info, null, 2));
    return await body(infoFile);
  } finally {
    for (const [sig, handler] of handlers) process.off(sig, handler);
    const t0 = Date.now();
    await stop();
    process.stdout.write(`real cluster stopped in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  }
}

function summarize(results: FileResult[], strict: boolean, tapFailed: boolean): number {
  let passed = 0;
  let failed = 0;
  for (const r of results) {
    passed += r.passed;
    failed += r.failed.length;
    // A file that failed without a failing test inside it crashed or timed out.
    if (!r.ok && r.failed.length === 0) failed += 1;
    if (strict) failed += r.skipped.length;
  }
  const summary = results.filter((r) => !r.ok || r.failed.length > 0 || (strict && r.skipped.length > 0));
  if (summary.length > 0) {
    process.stdout.write('\nfailures:\n');
    for (const r of summary) {
      process.stdout.write(`  ${r.file}\n`);
      for (const f of r.failed) process.stdout.write(`    ✗ ${f.name}\n`);
      if (!r.ok && r.failed.length === 0) process.stdout.write('    ✗ (the file failed outside any test: crash or timeout)\n');
      if (strict) for (const s of r.skipped) process.stdout.write(`    ✗ skipped under CI=true: ${s}\n`);
    }
  }
  if (tapFailed && failed === 0) failed = 1; // tap itself failed (e.g. no test files)
  process.stdout.write(`\n${passed} passed, ${failed} failed\n`);
  return failed > 0 ? 1 : 0;
}

async function runTap(files: string[], env: Record<string, string>, results: FileResult[], logName: string): Promise<number | null> {
  const rawLog = createWriteStream(join(REPO_ROOT, '.tap', logName));
  const parser = new Parser();
  const leafFailures = new Map<string, Result[]>();
  parser.on('child', (child: Parser) => {
    const file: FileResult = { file: child.name, passed: 0, failed: [], skipped: [], ok: true, seconds: 0 };
    child.on('assert', (res: Result) => {
      if (res.skip) file.skipped.push(`${res.name}${typeof res.skip === 'string' ? ` (${res.skip})` : ''}`);
      else if (res.todo) return;
      else if (res.ok) file.passed += 1;
      else file.failed.push({ name: res.name, diag: res.diag });
    });
    child.on('complete', () => results.push(file));
  });
  // Leaf failures at any depth, with the assertion's own message and diagnostics.
  parser.on('fail', (res: Result) => {
    const file = res.fullname.split(' > ')[0] ?? '';
    const list = leafFailures.get(file) ?? [];
    list.push(res);
    leafFailures.set(file, list);
  });
  // The file's own test point comes after its subtests: now its verdict is known.
  parser.on('assert', (res: Result) => {
    let file = results.find((r) => r.file === res.name);
    if (!file) {
      file = { file: res.name, passed: 0, failed: [], skipped: [], ok: res.ok, seconds: 0 };
      results.push(file);
    }
    file.ok = res.ok;
    file.seconds = (res.time ?? 0) / 1000;
    const mark = file.ok && file.failed.length === 0 ? '✔' : '✗';
    process.stdout.write(`${mark} ${relative(REPO_ROOT, file.file) || file.file}  ${file.passed} passed, ${file.failed.length} failed${file.skipped.length ? `, ${file.skipped.length} skipped` : ''} (${file.seconds.toFixed(1)} s)\n`);
    for (const f of leafFailures.get(file.file) ?? []) {
      process.stdout.write(`    ✗ ${f.fullname.split(' > ').slice(1).join(' > ')}\n`);
      if (f.diag) process.stdout.write(indent(stringify(f.diag).trimEnd(), 8) + '\n');
    }
    if (!file.ok && file.failed.length === 0) process.stdout.write(`    ✗ the file failed outside any test (crash or timeout); its output is in .tap/${logName}\n`);
  });

  const tapBin = join(REPO_ROOT, 'node_modules', 'tap', 'dist', 'esm', 'run.mjs');
  const child = spawn(process.execPath, [tapBin, '--reporter=tap', ...files], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --enable-source-maps`.trim() },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  child.stdout.on('data', (chunk: Buffer) => {
    rawLog.write(chunk);
    parser.write(chunk);
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  parser.end();
  await new Promise<void>((resolve) => rawLog.end(resolve));
  return code;
}

function indent(text: string, n: number): string {
  const pad = ' '.repeat(n);
  return text.split('\n').map((l) => pad + l).join('\n');
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.stdout.write('\n0 passed, 1 failed\n');
    process.exit(1);
  },
);
