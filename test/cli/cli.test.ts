// The one entry point: subcommands with --help, and clear errors for what it does not know.
import t from 'tap';
import { run } from '../harness/http.js';
import { CLI } from '../harness/kube-pcap.js';

const kubePcap = async (...args: string[]) => await run(process.execPath, [CLI, ...args]);

t.test('kube-pcap --help lists the subcommands', async (t) => {
  const r = await kubePcap('--help');
  t.equal(r.code, 0);
  t.match(r.stdout, /Usage: kube-pcap <command>/);
  t.match(r.stdout, /^ {2}gateway /m);
  t.match(r.stdout, /^ {2}agent /m);
});

t.test('no command: usage on stdout, exit 2', async (t) => {
  const r = await kubePcap();
  t.equal(r.code, 2);
  t.match(r.stdout, /Usage: kube-pcap/);
});

t.test('--version', async (t) => {
  const r = await kubePcap('--version');
  t.equal(r.code, 0);
  t.match(r.stdout, /^kube-pcap \d+\.\d+\.\d+\n$/);
});

for (const cmd of ['gateway', 'agent']) {
  t.test(`kube-pcap ${cmd} --help documents every option with its default`, async (t) => {
    const r = await kubePcap(cmd, '--help');
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, new RegExp(`^Usage: kube-pcap ${cmd} \\[options\\]`));
    t.match(r.stdout, /--listen=HOST:PORT/);
    t.match(r.stdout, /--tls-cert-file=FILE/);
    t.match(r.stdout, cmd === 'gateway' ? /--agent-service=NAMESPACE\/NAME .*default kube-pcap-agents\/kube-pcap-agent/ : /--capture-max-size-bytes=N .*default 10000000/);
  });

  t.test(`kube-pcap ${cmd}: an unknown option is a clear error, exit 2`, async (t) => {
    const r = await kubePcap(cmd, '--no-such-option');
    t.equal(r.code, 2);
    t.match(r.stderr, new RegExp(`kube-pcap ${cmd}: unknown option --no-such-option`));
    t.match(r.stderr, new RegExp(`kube-pcap ${cmd} --help`));
  });

  t.test(`kube-pcap ${cmd}: a stray argument and a bad value are clear errors`, async (t) => {
    const stray = await kubePcap(cmd, 'extra');
    t.equal(stray.code, 2);
    t.match(stray.stderr, /unexpected argument extra/);
    const bad = await kubePcap(cmd, '--listen=nowhere', '--dev-self-signed');
    t.equal(bad.code, 2);
    t.match(bad.stderr, /--listen must be HOST:PORT/);
  });

  t.test(`kube-pcap ${cmd} refuses to start without TLS`, async (t) => {
    const r = await kubePcap(cmd, ...(cmd === 'agent' ? ['--node-name=n1', '--client-ca-file=/z'] : ['--agent-ca-file=/x', '--agent-token-file=/y', '--agent-client-cert-file=/c', '--agent-client-key-file=/k']));
    t.equal(r.code, 2);
    t.match(r.stderr, /TLS is required/);
  });
}

t.test('kube-pcap agent needs its node name', async (t) => {
  const r = await kubePcap('agent', '--dev-self-signed');
  t.equal(r.code, 2);
  t.match(r.stderr, /--node-name is required/);
});

t.test('integers are checked against their bounds', async (t) => {
  const r = await kubePcap('agent', '--dev-self-signed', '--node-name=n1', '--capture-max-files=-1');
  t.equal(r.code, 2);
  t.match(r.stderr, /--capture-max-files must be between 0 and 1000/);
});

t.test('an unknown command is a clear error', async (t) => {
  const r = await kubePcap('frobnicate');
  t.equal(r.code, 2);
  t.match(r.stderr, /unknown command "frobnicate" \(commands: gateway, agent/);
});
