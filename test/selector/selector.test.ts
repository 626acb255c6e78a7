// The Calico selector language, table-driven: every operator, precedence, quoting,
// whitespace, canonical form, and the errors for bad input. The tables marked "Calico"
// hold the cases of Calico's own tokenizer and parser tests (libcalico-go lib/selector at
// v3.32.1), so that what Calico accepts, refuses, matches and prints, we do too.
import t from 'tap';
import { parseSelector, SelectorError } from '../../src/index.js';

const pod = { app: 'logging', tier: 'backend', 'app.kubernetes.io/name': 'fluent-bit', version: 'v1.2.3', empty: '' };

const cases: [string, boolean][] = [
  ['all()', true],
  ['', true],
  ['   ', true],
  ['app == "logging"', true],
  ["app == 'logging'", true],
  ['app=="logging"', true],
  ['  app   ==   "logging"  ', true],
  ['\tapp\t==\t"logging"\t', true],
  ['app == "web"', false],
  ['missing == "x"', false],
  ['app != "web"', true],
  ['app != "logging"', false],
  ['missing != "x"', true],
  ['app in {"web", "logging"}', true],
  ['app in {"web"}', false],
  ['app in {}', false],
  ['app in {"logging",}', true],
  ['missing in {"x"}', false],
  ['app not in {"web", "api"}', true],
  ['app not in {"logging"}', false],
  ['app notin {"logging"}', false],
  ['app notin{"web"}', true],
  ['app not   in {"web"}', true],
  ['missing not in {"x"}', true],
  ['app not in {}', true],
  ['has(app)', true],
  ['has( app )', true],
  ['has(missing)', false],
  ['!has(missing)', true],
  ['!has(app)', false],
  ['has(app.kubernetes.io/name)', true],
  ['app.kubernetes.io/name == "fluent-bit"', true],
  ['version starts with "v1."', true],
  ['version startswith "v1."', true],
  ['version starts  with"v1."', true],
  ['version starts with "v2."', false],
  ['version ends with ".3"', true],
  ['version endswith ".3"', true],
  ['version ends with ".4"', false],
  ['version contains "2"', true],
  ['version contains"2"', true],
  ['version contains "9"', false],
  ['missing starts with ""', false],
  ['empty == ""', true],
  ['has(empty)', true],
  ['app == "logging" && tier == "backend"', true],
  ['app == "logging" && tier == "frontend"', false],
  ['app == "web" || tier == "backend"', true],
  ['app == "web" || tier == "frontend"', false],
  // && binds tighter than ||: true || (false && false)
  ['app == "logging" || app == "web" && tier == "frontend"', true],
  // parentheses change it: (true || false) && false
  ['(app == "logging" || app == "web") && tier == "frontend"', false],
  ['!app == "web"', true],
  ['!(app == "logging" && tier == "backend")', false],
  ['!!has(app)', true],
  ['! ! ! has(app)', false],
  ['!has(app) || has(tier)', true],
  ['((((app == "logging"))))', true],
  ['all() && app == "web"', false],
  ['all( )', true],
  ['app==\'logging\'&&tier in{"backend"}', true],
  // global() matches every pod (Calico evaluates it as true); for a PacketCapture, whose
  // pods are always those of its own namespace, it means the same as all().
  ['global()', true],
  ['global( ) && app == "logging"', true],
  // Word operators are operators only after a label: these labels are named like them.
  ['contains contains "x"', false],
  ['in == "x"', false],
  ['not in {"x"}', false], // the label "not", the operator "in"
  ['has == "x"', false],
  ['all != "x"', true],
];

t.test('evaluation of every operator, precedence, quoting and spacing', async (t) => {
  for (const [text, expected] of cases) t.equal(parseSelector(text).matches(pod), expected, `${JSON.stringify(text)} -> ${expected}`);
});

// Calico: parser_test.go selectorTests (selector, labels it matches, labels it does not).
const calicoMatches: [string, Record<string, string>[], Record<string, string>[]][] = [
  ['a == "b"', [{ a: 'b' }, { a: 'b', c: 'd' }], [{}, { a: 'c' }, { c: 'd' }]],
  ['a == "b" && c == "d"', [{ a: 'b', c: 'd' }], [{}, { a: 'b', c: 'e' }, { a: 'c', c: 'd' }, { c: 'd' }, { a: 'b' }]],
  ['a == "b" || c == "d"', [{ a: 'b', c: 'd' }, { a: 'b' }, { c: 'd' }], [{}, { a: 'e', c: 'e' }, { c: 'e' }, { a: 'e' }]],
  [`a in {"'", '"', "c"}`, [{ a: 'c' }, { a: '"' }, { a: "'" }], [{}, { a: 'e' }]],
  [`a not in {"'", '"', "c"}`, [{}, { a: 'e' }], [{ a: 'c' }, { a: '"' }, { a: "'" }]],
  ["a == 'a'", [{ a: 'a' }], [{ a: 'b' }, {}]],
  ['a == "a"', [{ a: 'a' }], []],
  ['a != "b"', [{ a: 'a' }], []],
  ['a != "a"', [{}], [{ a: 'a' }]],
  ["a != 'a'", [], [{ a: 'a' }]],
  ['a contains "a"', [{ a: 'a' }, { a: 'bab' }, { a: 'aaa', b: 'c' }], [{}, { a: 'b' }, { b: 'aaa' }]],
  ['a starts with "a"', [{ a: 'a' }, { a: 'abb' }, { a: 'aaa', b: 'c' }], [{}, { a: 'b' }, { a: 'baa' }, { b: 'aaa' }]],
  ['a ends with "a"', [{ a: 'a' }, { a: 'bba' }, { a: 'aaa', b: 'c' }], [{}, { a: 'b' }, { a: 'aab' }, { b: 'aaa' }]],
  ['a in {"a"}', [{ a: 'a' }], [{ a: 'b' }]],
  ['!a in {"a"}', [{ a: 'b' }], []],
  ['a in {"a", "b"}', [{ a: 'a' }, { a: 'b' }], [{ a: 'c' }]],
  ['a not in {"d", "e"}', [{ a: 'a' }], []],
  ['a not in {"a"}', [], [{ a: 'a' }]],
  ['has(a)', [{ a: 'b' }], []],
  ['!has(a)', [{ b: 'b' }], [{ a: 'b' }]],
  ['has(b)', [], [{ a: 'b' }]],
  ['', [{}, { a: 'b' }], []],
  [' ', [{}], []],
  ['all()', [{}], []],
  [' all()', [{}, { a: 'b' }], []],
  ['global()', [{}], []],
  [' global()', [{}, { a: 'b' }], []],
  ['!!has(b)', [], [{ a: 'b' }]],
  ['! has(a)', [], [{ a: 'b' }]],
  ['!!! has(a)', [], [{ a: 'b' }]],
  ['!!!has(a)', [], [{ a: 'b' }]],
  ['!! ! has(a)', [], [{ a: 'b' }]],
  ['! !!has(a)', [], [{ a: 'b' }]],
  ["a == 'a1' && b == 'b1'", [{ a: 'a1', b: 'b1' }], []],
  ["a == 'a1' && b != 'b1'", [], [{ a: 'a1', b: 'b1' }]],
  ["a != 'a1' && b == 'b1'", [], [{ a: 'a1', b: 'b1' }]],
  ["a != 'a1' && b != 'b1'", [], [{ a: 'a1', b: 'b1' }]],
  ["a != 'a1' && !b == 'b1'", [], [{ a: 'a1', b: 'b1' }]],
  ["!a == 'a1' && b == 'b1'", [], [{ a: 'a1', b: 'b1' }]],
  ['has(a) && !has(b)', [{ a: 'a' }], []],
  ['!has(b) && has(a)', [{ a: 'a' }], []],
  ['!(!has(a) || has(b))', [{ a: 'a' }], []],
  ['!(has(b) || !has(a))', [{ a: 'a' }], []],
  ["a == 'a1' || b == 'b1'", [{ a: 'a1', b: 'b1' }], []],
  ["a == 'a1' || b != 'b1'", [{ a: 'a1', b: 'b1' }], []],
  ["a != 'a1' || b == 'b1'", [{ a: 'a1', b: 'b1' }], []],
  ["a != 'a1' || b != 'b1'", [], [{ a: 'a1', b: 'b1' }]],
  ["! a == 'a1' || ! b == 'b1'", [], [{ a: 'a1', b: 'b1' }]],
];

t.test('Calico: what each selector matches and does not match', async (t) => {
  for (const [text, yes, no] of calicoMatches) {
    const s = parseSelector(text);
    for (const labels of yes) t.equal(s.matches(labels), true, `${JSON.stringify(text)} matches ${JSON.stringify(labels)}`);
    for (const labels of no) t.equal(s.matches(labels), false, `${JSON.stringify(text)} does not match ${JSON.stringify(labels)}`);
  }
});

// Calico: tokenizer_test.go, the inputs it tokenizes (each one a whole selector here, so the
// parser must accept it too) — and the word operators written without their inner space.
const calicoAccepted = [
  'a=="b"', 'a!="b"', 'a != "b"', '(a=="b")', 'label == "value"', 'label contains "value"',
  'contains contains "contains"', "contains contains 'contains'", 'label contains"value"',
  'label startswith "value"', 'label endswith "value"', 'label starts with "value"',
  'startswith starts with "value"', 'label ends with "value"', 'endswith ends with "value"',
  'label starts  with "value"', 'label ends  with "value"', `${'a'.repeat(512)} == "value"`,
  'has(calico/k8s_ns)', 'has(calico/k8s_ns/role)', 'has(calico/k8s_NS-.1/role)',
  'calico/k8s_ns == "kube-system" && k8s-app == "kube-dns"',
  'a  not  in  {"bar"}  &&  ! has( foo )  ||  b  in  {"c"} ',
  'a notin{"bar"}&&!has(foo)||b in{"c"}',
  'a not in {}', 'a not in {"a"}', 'a not in {"a","B"}', 'a in {"a",}',
  'global()', 'global( )', 'all()', 'all( )',
];

t.test('Calico: every form its tokenizer and parser accept is accepted', async (t) => {
  for (const text of calicoAccepted) t.doesNotThrow(() => parseSelector(text), JSON.stringify(text));
});

// Calico: tokenizer_test.go's refused inputs and parser_test.go's badSelectors, plus the
// places where Calico's grammar is stricter than a reader might guess.
const calicoRefused = [
  `${'a'.repeat(513)} == "value"`, 'label == "value', "label == 'value", 'label = "value"', 'all(', 'global(',
  'has()', 'has(foo', 'has( foo ', 'a == "b" & has(foo)', 'a == "b" | has(foo)', 'label starts foo "value"',
  'label inf "value"', 'label ends foo "value"', 'label ends withs "value"', 'label squiggles "value"',
  'b == b', 'b contains b', 'b starts with b', 'b ends with b', "'b1' == b", 'b', 'a b', '!',
  'foo == "bar" &', 'foo == "bar" |', 'foo != ||', 'foo in {"", ||', 'foo in ""', '"FOO', `"FOO'`, "'FOO",
  '(', '(a == "foo"', ')', '()', '%', 'a == "b" && %', 'a == "b" || %', 'a ', 'has(foo) &&',
  // Stricter than it looks: no space before the parenthesis of has/all/global, no newline
  // (spaces and tabs only), no leading comma in a set, no "in" without a set.
  'has (app)', 'all ()', 'global ()', 'app == "a"\n', 'app ==\n"a"', 'app == "a"\r\n', 'a in {,}', 'a in {"x" "y"}',
  'a in', 'a not', 'a startswith', 'a == "b" all()', 'a not in "b"', 'a == "b")',
];

t.test('Calico: every form it refuses is refused, with a SelectorError', async (t) => {
  for (const text of calicoRefused) t.throws(() => parseSelector(text), SelectorError, JSON.stringify(text));
});

// Calico: parser_test.go canonicalisationTests; our toString() is Calico's String().
const calicoCanonical: [string, string][] = [
  ['', 'all()'],
  [' all() ', 'all()'],
  [' (all() )', 'all()'],
  ['! (has( b)||! has(a ))', '!(has(b) || !has(a))'],
  ['! (a == "b"&&! c != "d")', '!(a == "b" && !c != "d")'],
  [`a == "'"`, `a == "'"`],
  [`a == '"'`, `a == '"'`],
  [`a contains '"'`, `a contains '"'`],
  [`a contains "'"`, `a contains "'"`],
  [`a startswith '"'`, `a starts with '"'`],
  [`a endswith "'"`, `a ends with "'"`],
  [`a!='"'`, `a != '"'`],
  ['a in {"d"}', 'a in {"d"}'],
  ['a in {"a", "b"}', 'a in {"a", "b"}'],
  ['a in {"d", "a", "b"}', 'a in {"a", "b", "d"}'],
  ['a in {"z", "x", "y", "a"}', 'a in {"a", "x", "y", "z"}'],
  ['a in {"z", "z", "x", "y", "x", "a"}', 'a in {"a", "x", "y", "z"}'],
  ['a notin{"b","a",}', 'a not in {"a", "b"}'],
  ['global( )', 'global()'],
  ['!(k == \'v\')', '!k == "v"'],
  ['a == "1" || b == "2" && c == "3"', '(a == "1" || (b == "2" && c == "3"))'],
  ['!(!(k == \'v\' && has(t) || all()) && (a in {\'b\', \'c\'}))', '!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})'],
];

t.test('Calico: the canonical form is the one Calico prints, and parses back to itself', async (t) => {
  for (const [text, expected] of calicoCanonical) {
    const s = parseSelector(text);
    t.equal(s.toString(), expected, JSON.stringify(text));
    t.equal(parseSelector(s.toString()).toString(), expected, `${expected} is a fixed point`);
  }
});

t.test('invalid selectors throw SelectorError pointing at the problem', async (t) => {
  const bad: [string, number, RegExp][] = [
    ['app = "logging"', 4, /expected "==" \(a single "=" is not an operator\)/],
    ['app == logging', 7, /expected a value in quotes/],
    ['app == "logging', 7, /unterminated string/],
    ['app', 3, /expected "==", "!=", "in", "not in", "starts with", "ends with" or "contains" after the label "app"/],
    ['app == "a" &&', 13, /expected a label name/],
    ['(app == "a"', 11, /expected a closing "\)"/],
    ['app == "a")', 10, /expected "&&", "\|\|" or the end/],
    ['app in {"a" "b"}', 12, /expected "," or "}"/],
    ['app in "a"', 7, /expected a set of values/],
    ['has(', 4, /label name in has/],
    ['has (app)', 4, /after the label "has"/],
    ['all(x)', 4, /no closing "\)" after "all\("/],
    ['app starts "x"', 4, /after the label "app"/],
    ['app not "x"', 4, /after the label "app"/],
    ['app == "a" & tier == "b"', 11, /expected "&&"/],
    ['app == "a" and tier == "b"', 15, /after the label "and"/],
    ['app == "a" &&\ntier == "b"', 13, /found "\\n": Calico selectors separate tokens with spaces and tabs only/],
    [`${'k'.repeat(513)} == "v"`, 0, /label too long: 513 characters \(at most 512\)/],
  ];
  for (const [text, position, reason] of bad) {
    try {
      parseSelector(text);
      t.fail(`${text} should be refused`);
    } catch (err) {
      t.ok(err instanceof SelectorError, text);
      const e = err as SelectorError;
      t.equal(e.position, position, `${JSON.stringify(text)}: position`);
      t.match(e.reason, reason, `${JSON.stringify(text)}: reason`);
      t.match(e.message, new RegExp(`at position ${position}`));
    }
  }
});

t.test('a pod without labels', async (t) => {
  t.equal(parseSelector('all()').matches({}), true);
  t.equal(parseSelector('app != "x"').matches({}), true);
  t.equal(parseSelector('app == "x"').matches({}), false);
  t.equal(parseSelector('has(app)').matches({}), false);
});

t.test('labels named like Object.prototype members are plain labels', async (t) => {
  t.equal(parseSelector('has(constructor)').matches({}), false);
  t.equal(parseSelector('toString == "x"').matches({}), false);
  t.equal(parseSelector('toString == "x"').matches({ toString: 'x' }), true);
});
