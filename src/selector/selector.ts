// Calico's label selector language, as PacketCapture's spec.selector uses it:
//
//   all()                      every pod
//   has(k)    !has(k)          the label is (not) present
//   k == "v"  k != "v"         equal / not equal (not equal also matches pods without k)
//   k in {"a", "b"}            one of the values
//   k not in {"a", "b"}        none of the values (also matches pods without k)
//   k starts with "p"   k ends with "s"   k contains "c"
//   !e   e && e   e || e   ( e )   with ! binding tighter than &&, and && tighter than ||
//
// Strings take double or single quotes; whitespace may go anywhere between tokens.
// Invalid text throws a SelectorError that says what was expected, and where.

export type Labels = Readonly<Record<string, string>>;

export interface Selector {
  matches(labels: Labels): boolean;
  /** The selector in a canonical form (stable spacing and quotes). */
  toString(): string;
}

export class SelectorError extends Error {
  constructor(readonly selector: string, readonly position: number, readonly reason: string) {
    super(`invalid selector at position ${position}: ${reason}\n  ${selector}\n  ${' '.repeat(position)}^`);
    this.name = 'SelectorError';
  }
}

type Node =
  | { kind: 'all' }
  | { kind: 'has'; key: string }
  | { kind: 'eq' | 'ne' | 'starts' | 'ends' | 'contains'; key: string; value: string }
  | { kind: 'in' | 'notin'; key: string; values: string[] }
  | { kind: 'not'; child: Node }
  | { kind: 'and' | 'or'; children: Node[] };

type Token =
  | { t: 'ident'; v: string; pos: number }
  | { t: 'string'; v: string; pos: number }
  | { t: 'op'; v: '==' | '!=' | '!' | '&&' | '||' | '(' | ')' | '{' | '}' | ','; pos: number }
  | { t: 'end'; pos: number };

const IDENT = /[A-Za-z0-9_./-]/;

function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    const two = text.slice(i, i + 2);
    if (two === '==' || two === '!=' || two === '&&' || two === '||') {
      tokens.push({ t: 'op', v: two, pos: i });
      i += 2;
      continue;
    }
    if ('!(){},'.includes(c)) {
      tokens.push({ t: 'op', v: c as '!', pos: i });
      i++;
      continue;
    }
    if (c === '"' || c === "'") {
      const end = text.indexOf(c, i + 1);
      if (end < 0) throw new SelectorError(text, i, `unterminated string: no closing ${c}`);
      tokens.push({ t: 'string', v: text.slice(i + 1, end), pos: i });
      i = end + 1;
      continue;
    }
    if (IDENT.test(c)) {
      const start = i;
      while (i < text.length && IDENT.test(text[i]!)) i++;
      tokens.push({ t: 'ident', v: text.slice(start, i), pos: start });
      continue;
    }
    throw new SelectorError(text, i, `unexpected character "${c}"`);
  }
  tokens.push({ t: 'end', pos: text.length });
  return tokens;
}

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

  private isOp(v: string): boolean {
    const tok = this.peek();
    return tok.t === 'op' && tok.v === v;
  }

  private expectOp(v: string, what: string): void {
    const tok = this.next();
    if (tok.t !== 'op' || tok.v !== v) this.fail(tok, `expected ${what}`);
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
    while (this.isOp('||')) {
      this.next();
      children.push(this.and());
    }
    return children.length === 1 ? children[0]! : { kind: 'or', children };
  }

  private and(): Node {
    const children = [this.unary()];
    while (this.isOp('&&')) {
      this.next();
      children.push(this.unary());
    }
    return children.length === 1 ? children[0]! : { kind: 'and', children };
  }

  private unary(): Node {
    if (this.isOp('!')) {
      this.next();
      return { kind: 'not', child: this.unary() };
    }
    return this.primary();
  }

  private string(): string {
    const tok = this.next();
    if (tok.t !== 'string') this.fail(tok, 'expected a value in quotes, e.g. "web"');
    return tok.v;
  }

  private set(): string[] {
    this.expectOp('{', 'a set of values, e.g. {"a", "b"}');
    const values: string[] = [];
    if (this.isOp('}')) {
      this.next();
      return values;
    }
    for (;;) {
      values.push(this.string());
      const tok = this.next();
      if (tok.t === 'op' && tok.v === '}') return values;
      if (!(tok.t === 'op' && tok.v === ',')) this.fail(tok, 'expected "," or "}"');
    }
  }

  private primary(): Node {
    const tok = this.next();
    if (tok.t === 'op' && tok.v === '(') {
      const inner = this.or();
      this.expectOp(')', 'a closing ")"');
      return inner;
    }
    if (tok.t !== 'ident') this.fail(tok, 'expected a label name, "all()", "has(...)", "!" or "("');
    if ((tok.v === 'all' || tok.v === 'has') && this.isOp('(')) {
      this.next();
      if (tok.v === 'all') {
        this.expectOp(')', '")" after "all("');
        return { kind: 'all' };
      }
      const key = this.next();
      if (key.t !== 'ident') this.fail(key, 'expected a label name in has(...)');
      this.expectOp(')', '")" after the label name');
      return { kind: 'has', key: key.v };
    }
    const key = tok.v;
    const op = this.next();
    if (op.t === 'op' && (op.v === '==' || op.v === '!=')) return { kind: op.v === '==' ? 'eq' : 'ne', key, value: this.string() };
    if (op.t === 'ident') {
      if (op.v === 'in') return { kind: 'in', key, values: this.set() };
      const second = this.peek();
      if (op.v === 'not' && second.t === 'ident' && second.v === 'in') {
        this.next();
        return { kind: 'notin', key, values: this.set() };
      }
      if (op.v === 'starts' || op.v === 'ends') {
        if (!(second.t === 'ident' && second.v === 'with')) this.fail(second, `expected "with" after "${op.v}"`);
        this.next();
        return { kind: op.v, key, value: this.string() };
      }
      if (op.v === 'contains') return { kind: 'contains', key, value: this.string() };
    }
    this.fail(op, `expected "==", "!=", "in", "not in", "starts with", "ends with" or "contains" after the label "${key}"`);
  }
}

function evaluate(node: Node, labels: Labels): boolean {
  switch (node.kind) {
    case 'all':
      return true;
    case 'has':
      return Object.hasOwn(labels, node.key);
    case 'eq':
      return Object.hasOwn(labels, node.key) && labels[node.key] === node.value;
    case 'ne':
      return !Object.hasOwn(labels, node.key) || labels[node.key] !== node.value;
    case 'in':
      return Object.hasOwn(labels, node.key) && node.values.includes(labels[node.key]!);
    case 'notin':
      return !Object.hasOwn(labels, node.key) || !node.values.includes(labels[node.key]!);
    case 'starts':
      return Object.hasOwn(labels, node.key) && labels[node.key]!.startsWith(node.value);
    case 'ends':
      return Object.hasOwn(labels, node.key) && labels[node.key]!.endsWith(node.value);
    case 'contains':
      return Object.hasOwn(labels, node.key) && labels[node.key]!.includes(node.value);
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

const PRECEDENCE = { or: 1, and: 2, not: 3 } as const;

function render(node: Node, parent = 0): string {
  const wrap = (s: string, p: number): string => (p < parent ? `(${s})` : s);
  switch (node.kind) {
    case 'all':
      return 'all()';
    case 'has':
      return `has(${node.key})`;
    case 'eq':
      return `${node.key} == ${quote(node.value)}`;
    case 'ne':
      return `${node.key} != ${quote(node.value)}`;
    case 'in':
      return `${node.key} in {${node.values.map(quote).join(', ')}}`;
    case 'notin':
      return `${node.key} not in {${node.values.map(quote).join(', ')}}`;
    case 'starts':
      return `${node.key} starts with ${quote(node.value)}`;
    case 'ends':
      return `${node.key} ends with ${quote(node.value)}`;
    case 'contains':
      return `${node.key} contains ${quote(node.value)}`;
    case 'not': {
      const child = node.child;
      const simple = child.kind !== 'and' && child.kind !== 'or' && child.kind !== 'eq' && child.kind !== 'ne' && child.kind !== 'in' && child.kind !== 'notin' && child.kind !== 'starts' && child.kind !== 'ends' && child.kind !== 'contains';
      return `!${simple ? render(child, PRECEDENCE.not) : `(${render(child)})`}`;
    }
    case 'and':
      return wrap(node.children.map((c) => render(c, PRECEDENCE.and)).join(' && '), PRECEDENCE.and);
    case 'or':
      return wrap(node.children.map((c) => render(c, PRECEDENCE.or)).join(' || '), PRECEDENCE.or);
  }
}

/** Parses a Calico selector; throws SelectorError (with the position) on invalid text. */
export function parseSelector(text: string): Selector {
  const ast = new Parser(text, tokenize(text)).parse();
  const canonical = render(ast);
  return {
    matches: (labels: Labels) => evaluate(ast, labels),
    toString: () => canonical,
  };
}
