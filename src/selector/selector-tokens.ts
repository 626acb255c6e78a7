// The tokens of Calico's selector language (selector.ts has the grammar and its sources):
// labels, strings, punctuation, and the word operators that are operators only right after
// a label. Blanks are spaces and tabs only, as in Calico.

export class SelectorError extends Error {
  constructor(readonly selector: string, readonly position: number, readonly reason: string) {
    super(`invalid selector at position ${position}: ${reason}\n  ${selector}\n  ${' '.repeat(position)}^`);
    this.name = 'SelectorError';
  }
}

/** Calico's limit on a label name in a selector. */
export const MAX_LABEL_LENGTH = 512;

export type Punct = '(' | ')' | '{' | '}' | ',' | '==' | '!=' | '!' | '&&' | '||';
export type WordOp = 'in' | 'notin' | 'contains' | 'starts' | 'ends';

export type Token =
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

export const OPERATORS_AFTER_LABEL = '"==", "!=", "in", "not in", "starts with", "ends with" or "contains"';

export class Tokenizer {
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

