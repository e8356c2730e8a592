// GitHub's own expression evaluator (@actions/expressions) behind a JSON-lines pipe, for the
// workflow emulator (tests/ghemu/expressions.py). One request a line on stdin:
//   {"id": 1, "expr": "needs.plan.outputs.run-id != ''", "contexts": {...plain JSON...},
//    "status": {"success": true, "failure": false, "cancelled": false}, "condition": false}
// ("condition": true: an `if:`, evaluated as `success() && (expr)` unless it names a
// status function; optional "named": the contexts the expression may read where it is
// written, e.g. a job's `if:` and `strategy:` cannot read `matrix`, as on GitHub)
// one answer a line on stdout:
//   {"id": 1, "ok": true, "value": <plain JSON>, "string": "...", "truthy": true,
//    "status_functions": ["success"]}   or   {"id": 1, "ok": false, "error": "..."}
// The status functions (success, failure, cancelled, always) are not part of the library:
// the emulator decides their values by GitHub's rules and passes them in.
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import { join } from "node:path";

// the package lives in tests/node/node_modules (scripts/node-tools.sh), or where argv[2] says
const modules = process.argv[2] || join(import.meta.dirname, "..", "node", "node_modules");
const dist = (file) => pathToFileURL(join(modules, "@actions", "expressions", "dist", file)).href;
const { Evaluator, Lexer, Parser, data } = await import(dist("index.js"));
const { FunctionCall } = await import(dist("ast.js"));
const { truthy } = await import(dist("result.js"));

const CONTEXTS = ["github", "needs", "steps", "env", "secrets", "inputs", "job", "runner",
  "strategy", "matrix", "vars"];
const STATUS = ["success", "failure", "cancelled", "always"];

function statusFunctions(expr) {
  const found = new Set();
  const walk = (node) => {
    if (node === null || typeof node !== "object") return;
    if (node instanceof FunctionCall) {
      const name = node.functionName.lexeme.toLowerCase();
      if (STATUS.includes(name)) found.add(name);
    }
    for (const value of Object.values(node)) {
      if (Array.isArray(value)) value.forEach(walk);
      else if (value && typeof value === "object" && !(value.kind !== undefined)) walk(value);
    }
  };
  walk(expr);
  return [...found].sort();
}

function parse(text, named) {
  const infos = STATUS.map((name) => ({ name, minArgs: 0, maxArgs: 0 }));
  return new Parser(new Lexer(text).lex().tokens, named || CONTEXTS, infos).parse();
}

function evaluate(request) {
  let expr = parse(request.expr, request.named);
  const used = statusFunctions(expr);
  // an `if:` with no status function is `success() && (if)`, as GitHub evaluates it
  if (request.condition && used.length === 0) {
    expr = parse(`success() && (${request.expr})`, request.named);
  }
  const status = { always: true, ...(request.status || {}) };
  const functions = new Map(STATUS.map((name) => [name, {
    name, minArgs: 0, maxArgs: 0, call: () => new data.BooleanData(Boolean(status[name])),
  }]));
  const contexts = JSON.parse(JSON.stringify(request.contexts || {}), data.reviver);
  const value = new Evaluator(expr, contexts, functions).evaluate();
  return {
    ok: true,
    value: JSON.parse(JSON.stringify(value, data.replacer)),
    string: value.coerceString(),
    truthy: truthy(value),
    status_functions: used,
  };
}

const lines = createInterface({ input: process.stdin, terminal: false });
lines.on("line", (line) => {
  let request = { id: null };
  let answer;
  try {
    request = JSON.parse(line);
    answer = { id: request.id, ...evaluate(request) };
  } catch (err) {
    answer = { id: request.id, ok: false, error: String(err && err.message ? err.message : err) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
});
