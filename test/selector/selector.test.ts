// The Calico selector language, table-driven: every operator, precedence, quoting,
// whitespace, canonical form, and the errors for bad input.
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
  ['app == "web"', false],
  ['missing == "x"', false],
  ['app != "web"', true],
  ['app != "logging"', false],
  ['missing != "x"', true],
  ['app in {"web", "logging"}', true],
  ['app in {"web"}', false],
  ['app in {}', false],
  ['missing in {"x"}', false],
  ['app not in {"web", "api"}', true],
  ['app not in {"logging"}', false],
  ['missing not in {"x"}', true],
  ['has(app)', true],
  ['has(missing)', false],
  ['!has(missing)', true],
  ['!has(app)', false],
  ['has(app.kubernetes.io/name)', true],
  ['app.kubernetes.io/name == "fluent-bit"', true],
  ['version starts with "v1."', true],
  ['version starts with "v2."', false],
  ['version ends with ".3"', true],
  ['version contains "2"', true],
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
  ['!has(app) || has(tier)', true],
  ['((((app == "logging"))))', true],
  ['all() && app == "web"', false],
  ['app==\'logging\'&&tier in{"backend"}', true],
];

t.test('evaluation of every operator, precedence and quoting', async (t) => {
  for (const [text, expected] of cases) t.equal(parseSelector(text).matches(pod), expected, `${JSON.stringify(text)} -> ${expected}`);
});

t.test('canonical form: stable spacing and quotes, minimal parentheses, same meaning', async (t) => {
  const canon: [string, string][] = [
    ['app=="logging"', 'app == "logging"'],
    ["app == 'logging'", 'app == "logging"'],
    ['', 'all()'],
    ['a in{"x","y"}', 'a in {"x", "y"}'],
    ['a == "1" || b == "2" && c == "3"', 'a == "1" || b == "2" && c == "3"'],
    ['(a == "1" || b == "2") && c == "3"', '(a == "1" || b == "2") && c == "3"'],
    ['!(a == "1")', '!(a == "1")'],
    ['!has(a)', '!has(a)'],
    ['q == \'say "hi"\'', 'q == \'say "hi"\''],
  ];
  for (const [text, expected] of canon) {
    const s = parseSelector(text);
    t.equal(s.toString(), expected, text);
    t.equal(parseSelector(s.toString()).toString(), expected, 'and it parses back to itself');
  }
});

t.test('invalid selectors throw SelectorError pointing at the problem', async (t) => {
  const bad: [string, number, RegExp][] = [
    ['app = "logging"', 4, /unexpected character "="/],
    ['app == logging', 7, /expected a value in quotes/],
    ['app == "logging', 7, /unterminated string/],
    ['app', 3, /expected "==", "!=", "in", "not in", "starts with", "ends with" or "contains" after the label "app"/],
    ['app == "a" &&', 13, /expected a label name/],
    ['(app == "a"', 11, /expected a closing "\)"/],
    ['app == "a")', 10, /expected "&&", "\|\|" or the end/],
    ['app in {"a" "b"}', 12, /expected "," or "}"/],
    ['app in "a"', 7, /expected a set of values/],
    ['has(', 4, /expected a label name in has/],
    ['all(x)', 4, /"\)" after "all\("/],
    ['app starts "x"', 11, /expected "with" after "starts"/],
    ['app not "x"', 4, /after the label "app"/],
    ['app == "a" & tier == "b"', 11, /unexpected character "&"/],
    ['app == "a" and tier == "b"', 11, /expected "&&", "\|\|" or the end/],
    ['global()', 6, /after the label "global"/],
  ];
  for (const [text, position, reason] of bad) {
    try {
      parseSelector(text);
      t.fail(`${text} should be refused`);
    } catch (err) {
      t.ok(err instanceof SelectorError, text);
      const e = err as SelectorError;
      t.equal(e.position, position, `${text}: position`);
      t.match(e.reason, reason, `${text}: reason`);
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
