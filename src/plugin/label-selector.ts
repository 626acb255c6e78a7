// `-l` takes Kubernetes' label selector syntax (what `kubectl get pods -l` takes) and turns it
// into Calico's, which is what a PacketCapture's spec.selector holds:
//
//   a=b, a==b  -> a == "b"        a!=b           -> a != "b"
//   a in (x,y) -> a in {"x", "y"}  a notin (x,y)  -> a not in {"x", "y"}
//   a          -> has(a)          !a             -> !has(a)
//
// requirements joined by commas are ANDed. Both languages agree on what these mean for a
// pod without the label (`!=` and `notin` match it), so the translation is exact. Kubernetes'
// `gt`/`lt` have no Calico counterpart and are refused rather than approximated.
import { parseSelector } from '../selector/selector.js';

export class LabelSelectorError extends Error {
  constructor(readonly selector: string, readonly position: number, reason: string) {
    super(`invalid label selector at position ${position}: ${reason}\n  ${selector}\n  ${' '.repeat(position)}^`);
    this.name = 'LabelSelectorError';
  }
}

// A label key: an optional DNS-subdomain prefix and a name, as Kubernetes validates them.
const KEY = /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;

/** Splits at the commas that are not inside parentheses, keeping each part's offset. */
function requirements(text: string): { part: string; at: number }[] {
  const parts: { part: string; at: number }[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = text[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    if (i === text.length || (c === ',' && depth === 0)) {
      parts.push({ part: text.slice(start, i), at: start });
      start = i + 1;
    }
  }
  return parts;
}

function checkKey(text: string, key: string, at: number): string {
  if (key.length > 317 || !KEY.test(key)) throw new LabelSelectorError(text, at, `"${key}" is not a label key`);
  return key;
}

function quoted(text: string, value: string, at: number): string {
  if (value.length > 63 || !VALUE.test(value)) throw new LabelSelectorError(text, at, `"${value}" is not a label value`);
  return `"${value}"`;
}

function setValues(text: string, body: string, at: number): string {
  const values = body.split(',').map((v) => v.trim());
  if (values.length === 1 && values[0] === '') throw new LabelSelectorError(text, at, 'a set needs at least one value');
  return `{${values.map((v) => quoted(text, v, at)).join(', ')}}`;
}

/** The Calico selector equal to a Kubernetes label selector; throws LabelSelectorError. */
export function calicoFromLabelSelector(text: string): string {
  if (text.trim() === '') return 'all()';
  const terms: string[] = [];
  for (const { part, at: partAt } of requirements(text)) {
    const lead = part.length - part.trimStart().length;
    const req = part.trim();
    const at = partAt + lead;
    if (req === '') throw new LabelSelectorError(text, at, 'an empty requirement (two commas, or a comma at an end)');
    let m: RegExpExecArray | null;
    if ((m = /^!\s*([^\s!=(),]+)$/.exec(req))) {
      terms.push(`!has(${checkKey(text, m[1]!, at)})`);
    } else if ((m = /^([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)$/.exec(req))) {
      const op = m[2] === '!=' ? '!=' : '==';
      terms.push(`${checkKey(text, m[1]!, at)} ${op} ${quoted(text, m[3]!, at + req.lastIndexOf(m[3]!))}`);
    } else if ((m = /^([^\s!=(),]+)\s+(in|notin)\s*\(([^()]*)\)$/.exec(req))) {
      const op = m[2] === 'in' ? 'in' : 'not in';
      terms.push(`${checkKey(text, m[1]!, at)} ${op} ${setValues(text, m[3]!, at + req.indexOf('('))}`);
    } else if ((m = /^([^\s!=(),]+)\s*(>|<|\s+gt\s+|\s+lt\s+)/.exec(req))) {
      throw new LabelSelectorError(text, at, `numeric comparisons (${m[2]!.trim()}) have no equivalent in Calico's selectors`);
    } else if (/^[^\s!=(),]+$/.test(req)) {
      terms.push(`has(${checkKey(text, req, at)})`);
    } else {
      throw new LabelSelectorError(text, at, 'expected "key", "!key", "key=value", "key!=value", "key in (a,b)" or "key notin (a,b)"');
    }
  }
  const calico = terms.join(' && ');
  // The translation is checked by the same parser the agents use, so it never sends what
  // they would refuse.
  return parseSelector(calico).toString();
}
