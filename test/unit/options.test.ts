import t from 'tap';
import { agentConfig, agentOptions } from '../../src/config/agent.js';
import { gatewayConfig, gatewayOptions } from '../../src/config/gateway.js';
import { helpText, parseListen, parseOptions, readArgv, UsageError } from '../../src/config/options.js';

const gw = (...args: string[]) => gatewayConfig(parseOptions('gw', gatewayOptions, ['--dev-self-signed', '--agent-ca-file=/ca', '--agent-token-file=/t', '--agent-client-cert-file=/c', '--agent-client-key-file=/k', ...args], {}).values);

t.test('gateway defaults', async (t) => {
  const c = gw();
  t.same(c.listen, { host: '0.0.0.0', port: 9443 });
  t.same(c.agents.service, { namespace: 'kube-pcap-agents', name: 'kube-pcap-agent' });
  t.equal(c.cache.authnTtlMs, 10_000);
  t.equal(c.oidc, undefined);
  t.same(c.tokenAudiences, ['kube-pcap']);
  t.equal(c.audienceBoundOnly, false);
});

t.test('OIDC: issuer must be https, client id required, username prefix as the API server does it', async (t) => {
  t.throws(() => gw('--oidc-issuer-url=http://idp'), /must use https/);
  t.throws(() => gw('--oidc-issuer-url=https://idp'), /--oidc-client-id is required/);
  t.throws(() => gw('--oidc-client-id=x'), /needs --oidc-issuer-url/);
  t.equal(gw('--oidc-issuer-url=https://idp', '--oidc-client-id=x').oidc?.usernamePrefix, 'https://idp#');
  t.equal(gw('--oidc-issuer-url=https://idp', '--oidc-client-id=x', '--oidc-username-claim=email').oidc?.usernamePrefix, '');
  t.equal(gw('--oidc-issuer-url=https://idp', '--oidc-client-id=x', '--oidc-username-prefix=-').oidc?.usernamePrefix, '');
  t.equal(gw('--oidc-issuer-url=https://idp', '--oidc-client-id=x', '--oidc-username-prefix=corp:').oidc?.usernamePrefix, 'corp:');
});

t.test('lists, integers, environment fallbacks', async (t) => {
  t.same(gw('--token-audiences=a, b,,c').tokenAudiences, ['a', 'b', 'c']);
  const v = parseOptions('agent', agentOptions, ['--dev-self-signed', '--capture-max-files=5', '--client-ca-file=/ca'], { NODE_NAME: 'n7' }).values;
  const a = agentConfig(v);
  t.equal(a.nodeName, 'n7', 'NODE_NAME from the environment');
  t.equal(a.maxFiles, 5);
  t.equal(a.maxSizeBytes, 10_000_000);
  t.equal(a.rotationSeconds, 3600);
  t.equal(a.counterIntervalMs, 60_000, 'counters move in node reports at most once a minute by default');
  t.throws(() => parseOptions('agent', agentOptions, ['--capture-max-files=two'], {}), /must be an integer/);
  t.equal(agentConfig(parseOptions('agent', agentOptions, ['--dev-self-signed', '--node-name=n', '--client-ca-file=/ca', '--capture-max-size-bytes=5000000000'], {}).values).maxSizeBytes, 5_000_000_000, 'sizes beyond 32 bits');
});

t.test('leader election: defaults as client-go\'s, a unique identity, timings that keep one leader', async (t) => {
  const le = gw().leaderElection;
  t.same({ ns: le.namespace, name: le.name, d: le.leaseDurationMs, r: le.renewDeadlineMs, p: le.retryPeriodMs }, { ns: 'kube-pcap', name: 'kube-pcap-status-aggregator', d: 15_000, r: 10_000, p: 2000 });
  t.not(gw('--leader-election-identity=pod-a').leaderElection.identity, gw('--leader-election-identity=pod-a').leaderElection.identity, 'two replicas with one name are two candidates');
  t.match(gw('--leader-election-identity=pod-a').leaderElection.identity, /^pod-a_[0-9a-f]{8}$/);
  t.throws(() => gw('--leader-election-renew-deadline-seconds=15'), /less than --leader-election-lease-duration-seconds/);
  t.throws(() => gw('--leader-election-retry-period-seconds=9'), /retry-period/);
  t.throws(() => gw('--leader-election-lease=nonamespace'), /NAMESPACE\/NAME/);
  t.equal(gw().statusMinIntervalMs, 1000);
  t.same(gw().downloads, { maxConcurrent: 16, queue: 512, maxLiveStreams: 32, maxPerUser: 4, maxLiveStreamsPerUser: 4, accessRecheckMs: 60_000 }, 'downloads: a bound on streams and on waiting, and on live streams; access checked again each minute');
  t.throws(() => gw('--max-live-streams=0'), /max-live-streams/);
  t.equal(gw().agents.listConcurrency, 64);
});

t.test('listen addresses', async (t) => {
  t.same(parseListen('x', '127.0.0.1:9443'), { host: '127.0.0.1', port: 9443 });
  t.same(parseListen('x', '[::1]:9443'), { host: '::1', port: 9443 });
  t.same(parseListen('x', ':9443'), { host: '0.0.0.0', port: 9443 });
  for (const bad of ['9443', 'host', 'host:99999', '[::1]', 'a:b']) t.throws(() => parseListen('x', bad), /HOST:PORT/, bad);
});

t.test('help text shows defaults and environment variables', async (t) => {
  const text = helpText('kube-pcap agent [options]', 'summary', agentOptions);
  t.match(text, /--node-name=NAME\s+.*\(env NODE_NAME\)/);
  t.match(text, /--capture-max-files=N\s+.*\(default 2\)/);
});

t.test('readArgv: the one reader of command lines (servers, kubectl pcap, the extcap)', async (t) => {
  const table = {
    namespace: { type: 'string' as const, short: 'n', help: 'ns' },
    filter: { type: 'strings' as const, help: 'repeatable' },
    watch: { type: 'boolean' as const, help: 'b' },
  };
  const r = readArgv('kubectl pcap create', table, ['dns', '-n', 'shop', '--filter', 'udp:53', '--filter=tcp:80', '--watch'], { positionals: true, noun: 'flag' });
  t.same(r.positionals, ['dns']);
  t.same(r.values, { namespace: 'shop', filter: ['udp:53', 'tcp:80'], watch: true }, 'a short alias, a repeated flag, a switch');
  t.throws(() => readArgv('kubectl pcap create', table, ['--frobnicate'], { positionals: true, noun: 'flag' }), /^kubectl pcap create: unknown flag --frobnicate$/);
  t.throws(() => readArgv('kube-pcap extcap', table, ['stray']), /^kube-pcap extcap: unexpected argument stray$/, 'no positionals unless the command takes them');
  t.throws(() => readArgv('x', table, ['--namespace']), UsageError, 'a missing value is a usage error');
  t.same(parseOptions('x', { tag: { type: 'strings', help: 't', default: [] } }, ['--tag=a', '--tag=b'], {}).values, { tag: ['a', 'b'] }, 'typed values keep every repeat');
});
