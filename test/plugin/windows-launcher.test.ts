// extcap/kube-pcap.bat, read as cmd.exe would run it. There is no Windows here, so this is a
// reading of the script, not a run: cmd.exe looks a bare command name up in the current
// directory before PATH (unless NoDefaultCurrentDirectoryInExePath is set), and Wireshark
// starts extcaps in whatever directory it was started in, so a kubectl-pcap.cmd or node.exe
// planted there would run with the user's credentials. The launcher must set that variable
// before running anything, and run programs only by a full, quoted path.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { REPO_ROOT } from '../harness/control-plane.js';

const lines = (await readFile(join(REPO_ROOT, 'extcap', 'kube-pcap.bat'), 'utf8')).split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !/^(rem\b|@echo off)/i.test(l));
/** cmd.exe's own commands, which are never looked up on disk. */
const BUILTIN = /^(setlocal|endlocal|set|if|echo|exit|call|\)|\()\b/i;

t.test('the current directory is out of the search before anything runs', async (t) => {
  const first = lines.findIndex((l) => !/^(setlocal|set )/i.test(l));
  const set = lines.findIndex((l) => /^set "NoDefaultCurrentDirectoryInExePath=1"$/i.test(l));
  t.ok(set >= 0 && set < first, 'NoDefaultCurrentDirectoryInExePath=1 is set before the first command');
});

t.test('every program is run by a full, quoted path: nothing by bare name', async (t) => {
  const runs: string[] = [];
  for (const line of lines) {
    // The commands of a line: after "(", "&" or at its start, past if-conditions.
    const body = line.replace(/\d?>&\d/g, '').replace(/^if\s+(not\s+)?(exist\s+"[^"]*"|"[^"]*"==""|\S+==\S+)\s*/i, '');
    for (let part of body.split(/\s&\s/)) {
      part = part.trim().replace(/^\(\s*/, '').replace(/\s*\)$/, '').trim();
      if (part === '' || (BUILTIN.test(part) && !/^call\b/i.test(part))) continue;
      runs.push(part.replace(/^call\s+/i, ''));
    }
  }
  t.ok(runs.length >= 2, `programs run: ${runs.join(' | ')}`);
  for (const r of runs) t.match(r, /^"(%[A-Z_]+%\\|%KUBE_PCAP_PLUGIN%")/i, `${r.slice(0, 60)}: a quoted path from a known folder or the user's own setting`);
  t.notOk(lines.some((l) => /^set "PATH=%PATH%/i.test(l)), 'PATH is not extended at its end (where the current directory and anything else come first)');
});
