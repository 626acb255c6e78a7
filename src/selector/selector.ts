// Calico's label selector language, as PacketCapture's spec.selector uses it:
//
//   all()   global()           every pod (global(): see the README, Selectors)
//   has(k)    !has(k)          the label is (not) present
//   k == "v"  k != "v"         equal / not equal (not equal also matches pods without k)
//   k in {"a", "b"}            one of the values
//   k not in {"a", "b"}        none of the values (also matches pods without k)
//   k starts with "p"   k ends with "s"   k contains "c"
//   !e   e && e   e || e   ( e )   with ! binding tighter than &&, and && tighter than ||
//
// The grammar is Calico's own, token for token (libcalico-go lib/selector, v3.32.1), so a
// selector that Calico accepts is accepted here and one it refuses is refused here:
// - tokens are separated by spaces and tabs only (a newline is refused);
// - the word operators may be written without their inner space (`startswith`,
//   `endswith`, `notin`) and are only operators right after a label, so `contains
//   contains "x"` is the label `contains`;
// - `has(`, `all(` and `global(` take no space before their parenthesis;
// - a label is at most 512 of [A-Za-z0-9_./-]; strings have no escapes;
// - a set may end with a comma: `k in {"a",}`.
// Invalid text throws a SelectorError that says what was expected, and where.

import { OPERATORS_AFTER_LABEL, SelectorError, Tokenizer, type Punct, type Token } from './selector-tokens.js';

export { MAX_LABEL_LENGTH, SelectorError } from './selector-tokens.js';

export type Labels = Readonly<Record<string, string>>;

export interface Selector {
  matches(labels: Labels): boolean;
  /** The canonical form, exactly as Calico prints the same selector. */
  toString(): string;
}

type Node =
  | { kind: 'all' | 'global' }
  | { kind: 'has'; key: string }
  | { kind: 'eq' | 'ne' | 'starts' | 'ends' | 'contains'; key: string; value: string }
  | { kind: 'in' | 'notin'; key: string; values: string[] }
  | { kind: 'not'; child: Node }
  | { kind: 'and' | 'or'; children: Node[] };

class Parser {
  private i = 0;
  constructor(private readonly text: string, private readonly tokens: Token[]) {}

  private peek(): Token {
    return this.tokens[this.i]!;
  }

  private next(): Token {
    return this.tokens[this.i++]!;
  }

  private fail(tok: Token, reason: string): never {
    throw new SelectorError(this.text, tok.pos, reason);
  }

  private isPunct(v: Punct): boolean {
    const tok = this.peek();
    return tok.t === 'punct' && tok.v === v;
  }

  parse(): Node {
    if (this.peek().t === 'end') return { kind: 'all' };
    const node = this.or();
    const tok = this.peek();
    if (tok.t !== 'end') this.fail(tok, 'expected "&&", "||" or the end of the selector');
    return node;
  }

  private or(): Node {
    const children = [this.and()];
    while (this.isPunct('||')) {
      this.next();
      children.push(this.and());
    }
    return children.length === 1 ? children[0]! : { kind: 'or', children };
  }

  private and(): Node {
    const children = [this.operation()];
    while (this.isPunct('&&')) {
      this.next();
      children.push(this.operation());
    }
    return children.length === 1 ? children[0]! : { kind: 'and', children };
  }

  /** A possibly negated operation; leading "!"s collapse, as in Calico. */
  private operation(): Node {
    let negated = false;
    while (this.isPunct('!')) {
      this.next();
      negated = !negated;
    }
    const node = this.primary();
    return negated ? { kind: 'not', child: node } : node;
  }

  private string(): string {
    const tok = this.next();
    if (tok.t !== 'string') this.fail(tok, 'expected a value in quotes, e.g. "web"');
    return tok.v;
  }

  private set(): string[] {
    const open = this.next();
    if (!(open.t === 'punct' && open.v === '{')) this.fail(open, 'expected a set of values, e.g. {"a", "b"}');
    const values: string[] = [];
    // Calico's loop: values separated by commas, a trailing comma allowed.
    while (this.peek().t === 'string') {
      values.push(this.string());
      if (!this.isPunct(',')) break;
      this.next();
    }
    const close = this.next();
    if (!(close.t === 'punct' && close.v === '}')) this.fail(close, values.length === 0 ? 'expected a value in quotes or "}"' : 'expected "," or "}"');
    return values;
  }

  private primary(): Node {
    const tok = this.next();
    if (tok.t === 'has') return { kind: 'has', key: tok.v };
    if (tok.t === 'all' || tok.t === 'global') return { kind: tok.t };
    if (tok.t === 'label') return this.comparison(tok.v);
    if (tok.t === 'punct' && tok.v === '(') {
      const inner = this.or();
      const close = this.next();
      if (!(close.t === 'punct' && close.v === ')')) this.fail(close, 'expected a closing ")"');
      return inner;
    }
    this.fail(tok, 'expected a label name, "all()", "has(...)", "!" or "("');
  }

  private comparison(key: string): Node {
    const op = this.next();
    if (op.t === 'punct' && (op.v === '==' || op.v === '!=')) return { kind: op.v === '==' ? 'eq' : 'ne', key, value: this.string() };
    if (op.t === 'word') {
      if (op.v === 'in' || op.v === 'notin') return { kind: op.v, key, values: this.set() };
      return { kind: op.v, key, value: this.string() };
    }
    this.fail(op, `expected ${OPERATORS_AFTER_LABEL} after the label "${key}"`);
  }
}

function evaluate(node: Node, labels: Labels): boolean {
  const value = (key: string): string | undefined => (Object.hasOwn(labels, key) ? labels[key] : undefined);
  switch (node.kind) {
    case 'all':
    case 'global':
      return true;
    case 'has':
      return value(node.key) !== undefined;
    case 'eq':
      return value(node.key) === node.value;
    case 'ne':
      return value(node.key) !== node.value;
    case 'in': {
      const v = value(node.key);
      return v !== undefined && node.values.includes(v);
    }
    case 'notin': {
      const v = value(node.key);
      return v === undefined || !node.values.includes(v);
    }
    case 'starts':
      return value(node.key)?.startsWith(node.value) ?? false;
    case 'ends':
      return value(node.key)?.endsWith(node.value) ?? false;
    case 'contains':
      return value(node.key)?.includes(node.value) ?? false;
    case 'not':
      return !evaluate(node.child, labels);
    case 'and':
      return node.children.every((c) => evaluate(c, labels));
    case 'or':
      return node.children.some((c) => evaluate(c, labels));
  }
}

function quote(v: string): string {
  return v.includes('"') ? `'${v}'` : `"${v}"`;
}

/** Sorted by bytes and without duplicates, as Go sorts Calico's sets. */
function stringSet(values: readonly string[]): string[] {
  const sorted = [...new Set(values)].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  return sorted;
}

// Calico's canonical form (parser.Selector.String()): every && and || group in
// parentheses, "!" written before its operand, sets sorted and de-duplicated.
function render(node: Node): string {
  switch (node.kind) {
    case 'all':
      return 'all()';
    case 'global':
      return 'global()';
    case 'has':
      return `has(${node.key})`;
    case 'eq':
      return `${node.key} == ${quote(node.value)}`;
    case 'ne':
      return `${node.key} != ${quote(node.value)}`;
    case 'in':
      return `${node.key} in {${stringSet(node.values).map(quote).join(', ')}}`;
    case 'notin':
      return `${node.key} not in {${stringSet(node.values).map(quote).join(', ')}}`;
    case 'starts':
      return `${node.key} starts with ${quote(node.value)}`;
    case 'ends':
      return `${node.key} ends with ${quote(node.value)}`;
    case 'contains':
      return `${node.key} contains ${quote(node.value)}`;
    case 'not':
      return `!${render(node.child)}`;
    case 'and':
      return `(${node.children.map(render).join(' && ')})`;
    case 'or':
      return `(${node.children.map(render).join(' || ')})`;
  }
}

/** Parses a Calico selector; throws SelectorError (with the position) on invalid text. */
export function parseSelector(text: string): Selector {
  const ast = new Parser(text, new Tokenizer(text).run()).parse();
  const canonical = render(ast);
  return {
    matches: (labels: Labels) => evaluate(ast, labels),
    toString: () => canonical,
  };
}
