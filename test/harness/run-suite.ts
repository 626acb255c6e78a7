// The test suite's runner (what `npm test` and `.ci/run` execute inside the sandbox):
// starts one control plane for the whole run, runs tap, prints what failed and a final
// `N passed, N failed` line, and stops everything it started.
//
//   node dist/test/harness/run-suite.js [tap file arguments...]
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { Parser, type Result } from 'tap-parser';
import { stringify } from 'tap-yaml';
import { ControlPlane, REPO_ROOT } from './control-plane.js';

interface FileResult {
  file: string;
  passed: number;
  failed: { name: string; diag: unknown }[];
  skipped: string[];
  ok: boolean;
  seconds: number;
}

async function main(): Promise<number> {
  const files = process.argv.slice(2);
  const sandboxed = process.env.KUBE_PCAP_SANDBOX === '1';
  const strict = process.env.CI === 'true';
  const tmp = join(process.env.KUBE_PCAP_TMP ?? '/tmp', 'kube-pcap-test');
  await mkdir(tmp, { recursive: true });
  await mkdir(join(REPO_ROOT, '.tap'), { recursive: true });

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
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      process.stdout.write(`\n${sig}: stopping the control plane\n`);
      void stop().finally(() => process.exit(130));
    });
  }

  const results: FileResult[] = [];
  let tapCode: number | null = null;
  try {
    tapCode = await runTap(files, infoFile, results);
  } finally {
    await stop();
  }

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
  if (tapCode !== 0 && failed === 0) failed = 1; // tap itself failed (e.g. no test files)
  process.stdout.write(`\n${passed} passed, ${failed} failed\n`);
  return failed > 0 ? 1 : 0;
}

async function runTap(files: string[], infoFile: string, results: FileResult[]): Promise<number | null> {
  const rawLog = createWriteStream(join(REPO_ROOT, '.tap', 'last-run.tap'));
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
    if (!file.ok && file.failed.length === 0) process.stdout.write('    ✗ the file failed outside any test (crash or timeout); its output is in .tap/last-run.tap\n');
  });

  const tapBin = join(REPO_ROOT, 'node_modules', 'tap', 'dist', 'esm', 'run.mjs');
  const child = spawn(process.execPath, [tapBin, '--reporter=tap', ...files], {
    cwd: REPO_ROOT,
    env: { ...process.env, KUBE_PCAP_TEST_CLUSTER: infoFile, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --enable-source-maps`.trim() },
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
