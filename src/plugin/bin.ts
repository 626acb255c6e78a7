#!/usr/bin/env node
// kubectl-pcap's entry: checks the Node.js version before loading anything that needs a
// newer one, so that an old Node gives one clear sentence instead of a syntax error.
import { nodeTooOld } from './node-version.js';

const tooOld = nodeTooOld(process.versions.node, process.execPath);
if (tooOld) {
  process.stderr.write(`${tooOld}\n`);
  process.exit(1);
}
const { main } = await import('./main.js');
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
