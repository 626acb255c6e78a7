// npm's prepare (git installs, `npm install` in a clone) and prepack (`npm pack`): compile
// what the package ships (dist/src, dist/routes) afresh, so a tarball never carries stale or
// missing output. dist/ is git-ignored; package.json "files" puts it in the package.
//
// --shrinkwrap (prepack) also ships the lockfile as npm-shrinkwrap.json, which npm honours
// when it installs the package: `npm install -g kube-pcap-<v>.tgz` gets exactly the tested
// dependency versions, and from npm's cache alone when the machine is offline. --postpack
// removes that copy again.
import { execFileSync } from 'node:child_process';
import { copyFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const shrinkwrap = join(root, 'npm-shrinkwrap.json');
if (process.argv.includes('--postpack')) {
  rmSync(shrinkwrap, { force: true });
  process.exit(0);
}
let tsc;
try {
  tsc = createRequire(join(root, 'package.json')).resolve('typescript/bin/tsc');
} catch {
  console.error('kube-pcap: building needs the dev dependencies (TypeScript): run "npm ci" first, without --omit=dev');
  process.exit(1);
}
for (const dir of ['dist/src', 'dist/routes']) rmSync(join(root, dir), { recursive: true, force: true });
execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit', cwd: root });
if (process.argv.includes('--shrinkwrap')) copyFileSync(join(root, 'package-lock.json'), shrinkwrap);
