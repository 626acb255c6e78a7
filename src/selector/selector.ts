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

export type Labels = Readonly<Record<string, string>>;

export interface Selector {
  matches(labels: Labels): boolean;
  /** The canonical form, exactly as Calico prints the same selector. */
  toString(): string;
}

export class SelectorError extends Error {
  constructor(readonly selector: string, readonly position: number, readonly reason: string) {
    super(`invalid selector at position ${position}: ${reason}\n  ${selector}\n  ${' '.repeat(position)}^`);
    this.name = 'SelectorError';
  }
}

/** Calico's limit on a label name in a selector. */
export const MAX_LABEL_LENGTH = 512;

type Node =
  | { kind: 'all' | 'global' }
  | { kind: 'has'; key: string }
  | { kind: 'eq' | 'ne' | 'starts' | 'ends' | 'contains'; key: string; value: string }
  | { kind: 'in' | 'notin'; key: string; values: string[] }
  | { kind: 'not'; child: Node }
  | { kind: 'and' | 'or'; children: Node[] };

type Punct = '(' | ')' | '{' | '}' | ',' | '==' | '!=' | '!' | '&&' | '||';
type WordOp = 'in' | 'notin' | 'contains' | 'starts' | 'ends';

type Token =
  | { t: 'label' | 'string' | 'has'; v: string; pos: number }
  | { t: 'punct'; v: Punct; pos: number }
  | { t: 'word'; v: WordOp; pos: number }
  | { t: 'all' | 'global' | 'end'; pos: number };

const isIdentChar = (c: string | undefined): boolean => c !== undefined && /^[A-Za-z0-9_./-]$/.test(c);
const isBlank = (c: string | undefined): boolean => c === ' ' || c === '\t';

const WORD_OPS: readonly { words: readonly string[]; op: WordOp }[] = [
  { words: ['contains'], op: 'contains' },
  { words: ['starts', 'with'], op: 'starts' },
  { words: ['ends', 'with'], op: 'ends' },
  { words: ['not', 'in'], op: 'notin' },
  { words: ['in'], op: 'in' },
];

const OPERATORS_AFTER_LABEL = '"==", "!=", "in", "not in", "starts with", "ends with" or "contains"';

class Tokenizer {
  private i = 0;
  readonly tokens: Token[] = [];

  constructor(private readonly text: string) {}

  private fail(pos: number, reason: string): never {
    throw new SelectorError(this.text, pos, reason);
  }

  private skipBlanks(): void {
    while (isBlank(this.text[this.i])) this.i++;
  }

  private identifier(what: string): string {
    const start = this.i;
    while (isIdentChar(this.text[this.i])) this.i++;
    const ident = this.text.slice(start, this.i);
    if (ident === '') this.fail(start, this.unexpected(start, what));
    if (ident.length > MAX_LABEL_LENGTH) this.fail(start, `label too long: ${ident.length} characters (at most ${MAX_LABEL_LENGTH})`);
    return ident;
  }

  private unexpected(pos: number, expected: string): string {
    const c = this.text[pos];
    if (c === undefined) return `expected ${expected}, found the end of the selector`;
    if (/\s/.test(c)) return `expected ${expected}, found ${JSON.stringify(c)}: Calico selectors separate tokens with spaces and tabs only`;
    return `expected ${expected}, found unexpected character "${c}"`;
  }

  /** `word(` ... `)` with blanks allowed inside the parentheses only. */
  private call(word: string): boolean {
    if (!this.text.startsWith(`${word}(`, this.i)) return false;
    this.i += word.length + 1;
    return true;
  }

  private closeCall(word: string): void {
    this.skipBlanks();
    if (this.text[this.i] !== ')') this.fail(this.i, `no closing ")" after "${word}("`);
    this.i++;
  }

  /** One of Calico's word operators, each ending on a word boundary. */
  private wordOperator(): WordOp | undefined {
    for (const { words, op } of WORD_OPS) {
      let j = this.i;
      let ok = true;
      for (const [n, w] of words.entries()) {
        if (!this.text.startsWith(w, j)) {
          ok = false;
          break;
        }
        j += w.length;
        // Between the words of "starts with", "ends with", "not in" any blanks, or none.
        if (n < words.length - 1) while (isBlank(this.text[j])) j++;
      }
      if (ok && !isIdentChar(this.text[j])) {
        this.i = j;
        return op;
      }
    }
    return undefined;
  }

  run(): Token[] {
    const text = this.text;
    for (;;) {
      this.skipBlanks();
      const pos = this.i;
      if (pos >= text.length) {
        this.tokens.push({ t: 'end', pos });
        return this.tokens;
      }
      const c = text[pos]!;
      const last = this.tokens[this.tokens.length - 1];
      switch (c) {
        case '(': case ')': case '{': case '}': case ',':
          this.tokens.push({ t: 'punct', v: c, pos });
          this.i++;
          continue;
        case '"': case "'": {
          const end = text.indexOf(c, pos + 1);
          if (end < 0) this.fail(pos, `unterminated string: no closing ${c}`);
          this.tokens.push({ t: 'string', v: text.slice(pos + 1, end), pos });
          this.i = end + 1;
          continue;
        }
        case '=':
          if (text[pos + 1] !== '=') this.fail(pos, 'expected "==" (a single "=" is not an operator)');
          this.tokens.push({ t: 'punct', v: '==', pos });
          this.i += 2;
          continue;
        case '!':
          if (text[pos + 1] === '=') {
            this.tokens.push({ t: 'punct', v: '!=', pos });
            this.i += 2;
          } else {
            this.tokens.push({ t: 'punct', v: '!', pos });
            this.i++;
          }
          continue;
        case '&': case '|':
          if (text[pos + 1] !== c) this.fail(pos, `expected "${c}${c}"`);
          this.tokens.push({ t: 'punct', v: c === '&' ? '&&' : '||', pos });
          this.i += 2;
          continue;
      }
      if (last?.t === 'label') {
        // Right after a label only an operator may follow; a word here is one of Calico's
        // word operators or an error (so `a b` is refused by the tokenizer, as in Calico).
        const op = this.wordOperator();
        if (op === undefined) this.fail(pos, this.unexpected(pos, `${OPERATORS_AFTER_LABEL} after the label "${last.v}"`));
        this.tokens.push({ t: 'word', v: op, pos });
      } else if (this.call('has')) {
        this.skipBlanks();
        const key = this.identifier('a label name in has(...)');
        this.closeCall('has');
        this.tokens.push({ t: 'has', v: key, pos });
      } else if (this.call('all')) {
        this.closeCall('all');
        this.tokens.push({ t: 'all', pos });
      } else if (this.call('global')) {
        this.closeCall('global');
        this.tokens.push({ t: 'global', pos });
      } else {
        const label = this.identifier('a label name, "all()", "has(...)", "!" or "("');
        this.tokens.push({ t: 'label', v: label, pos });
      }
    }
  }
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
