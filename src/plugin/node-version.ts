// The Node.js kubectl-pcap needs (package.json engines), checked before anything that needs
// it is loaded. Kept free of newer syntax and imports so that an old Node can run it.
export const REQUIRED_NODE = '22.19.0';

/** Why this Node.js cannot run kubectl-pcap, or undefined when it can. */
export function nodeTooOld(version: string, execPath: string): string | undefined {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  const [needMajor = 0, needMinor = 0] = REQUIRED_NODE.split('.').map(Number);
  if (major > needMajor || (major === needMajor && minor >= needMinor)) return undefined;
  return `kubectl-pcap needs Node.js ${REQUIRED_NODE} or later; this is Node.js ${version} (${execPath}). Install Node.js 24 LTS (https://nodejs.org) and reinstall kubectl-pcap with it (npm install -g).`;
}
