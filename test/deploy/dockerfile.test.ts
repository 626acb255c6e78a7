// The Dockerfile cannot be built here (no Docker engine), so it is held to its promises by
// a real Dockerfile parser and linter: multi-stage, `npm ci` from the lockfile, a small
// runtime, tcpdump and iproute2 only in the agent image, a non-root gateway, no dev
// dependencies, no HEALTHCHECK (Kubernetes probes do that).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import ast from 'dockerfile-ast';
import utils from 'dockerfile-utils';
import { NODE_FLAGS } from '../../src/node-flags.js';
import { REPO_ROOT } from '../harness/control-plane.js';

const text = await readFile(join(REPO_ROOT, 'Dockerfile'), 'utf8');
const dockerfile = ast.DockerfileParser.parse(text);
const froms = dockerfile.getFROMs();
const stages = new Map(froms.map((f) => [f.getBuildStage() ?? '', f]));

/** The instructions of one stage, as [KEYWORD, arguments]. */
function stage(name: string): [string, string][] {
  const from = stages.get(name);
  if (!from) throw new Error(`no stage ${name}`);
  const start = from.getRange().start.line;
  const next = froms.map((f) => f.getRange().start.line).filter((l) => l > start).sort((a, b) => a - b)[0] ?? Infinity;
  return dockerfile.getInstructions()
    .filter((i) => i.getRange().start.line > start && i.getRange().start.line < next)
    .map((i) => [i.getKeyword(), i.getArgumentsContent() ?? '']);
}

t.test('the linter finds nothing', async (t) => {
  const problems = utils.validate(text).map((d) => `line ${d.range.start.line + 1}: ${d.message}`);
  t.same(problems, []);
});

t.test('multi-stage with gateway and agent targets from one pinned Node 24 base', async (t) => {
  t.ok(froms.length >= 3, 'several stages');
  t.ok(stages.has('gateway') && stages.has('agent'), 'gateway and agent targets');
  t.match(text, /^ARG NODE_IMAGE=node:24\.\d+\.\d+-bookworm-slim$/m, 'a pinned Node 24 image');
});

t.test('dependencies come from the lockfile; the runtime has no dev dependencies', async (t) => {
  t.ok(stage('build').some(([k, a]) => k === 'RUN' && /\bnpm ci\b/.test(a)), 'npm ci in the build stage');
  t.notOk(text.includes('npm install'), 'never npm install');
  // package.json's prepare compiles the sources, which are not copied yet when npm ci runs.
  for (const s of ['build', 'prod-deps']) t.ok(stage(s).filter(([k, a]) => k === 'RUN' && /\bnpm ci\b/.test(a)).every(([, a]) => a.includes('--ignore-scripts')), `npm ci --ignore-scripts in ${s}`);
  t.ok(stage('prod-deps').some(([k, a]) => k === 'RUN' && /npm ci\b.*--omit=dev/.test(a)), 'production dependencies by npm ci --omit=dev');
  for (const s of ['gateway', 'agent']) {
    const copies = stage(s).filter(([k]) => k === 'COPY').map(([, a]) => a);
    t.notMatch(copies.join('\n'), /--from=build\b/, `${s} copies nothing straight from the build stage (no dev deps, no sources)`);
  }
});

t.test('the gateway runs as a non-root user and has no capture tools', async (t) => {
  const user = stage('gateway').filter(([k]) => k === 'USER').map(([, a]) => a).pop();
  t.ok(user && !/^(0|root)(:|$)/.test(user), `USER ${user}`);
  t.notMatch(stage('gateway').map(([, a]) => a).join('\n'), /tcpdump/);
});

t.test('the agent image has tcpdump, iproute2 and stdbuf', async (t) => {
  const run = stage('agent').filter(([k]) => k === 'RUN').map(([, a]) => a).join('\n');
  t.match(run, /apt-get install[^\n]*--no-install-recommends[^\n]*tcpdump[^\n]*iproute2[^\n]*coreutils/, 'tcpdump, iproute2, stdbuf for tcpdump\'s output buffer');
  t.notMatch(run, /perl/, 'nothing to grow a pipe between tcpdump and the agent: there is none');
  t.match(run, /rm -rf \/var\/lib\/apt\/lists/, 'apt lists removed');
});

t.test('no HEALTHCHECK anywhere', async (t) => {
  t.equal(dockerfile.getHEALTHCHECKs().length, 0);
});

t.test('.dockerignore keeps local builds and modules out of the context', async (t) => {
  const ignore = (await readFile(join(REPO_ROOT, '.dockerignore'), 'utf8')).split('\n');
  for (const entry of ['node_modules', 'dist', '.git']) t.ok(ignore.includes(entry), entry);
});

t.test('both images start Node with the flags the servers are tested and measured with', async (t) => {
  for (const s of ['gateway', 'agent']) {
    const entrypoint = stage(s).filter(([k]) => k === 'ENTRYPOINT').map(([, a]) => JSON.parse(a) as string[]).pop();
    t.same(entrypoint, ['node', ...NODE_FLAGS, '/app/dist/src/cli.js'], `${s} ENTRYPOINT`);
  }
});
