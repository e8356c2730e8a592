// GitHub's own workflow parser (@actions/workflow-parser) over workflow files: prints one JSON
// object, {"<file>": [{"message", "line", "column"}, ...]}; an empty list means the file is valid.
// Node 20 refuses the package's JSON imports when loaded directly: tests/workflow_validators.py
// bundles this file with esbuild (--bundle --platform=node --format=cjs) and runs the bundle.
//   node validate-workflow.cjs FILE...
import { readFileSync } from "node:fs";
import { convertWorkflowTemplate, NoOperationTraceWriter, parseWorkflow } from "@actions/workflow-parser";

async function validate(name) {
  const content = readFileSync(name, "utf8");
  const parsed = parseWorkflow({ name, content }, new NoOperationTraceWriter());
  if (parsed.value !== undefined) {
    await convertWorkflowTemplate(parsed.context, parsed.value); // adds its errors to the context
  }
  const found = parsed.context.errors.getErrors().map((error) => ({
    message: error.message,
    line: error.range?.start.line ?? 0,
    column: error.range?.start.column ?? 0,
  }));
  if (parsed.value === undefined && found.length === 0) {
    found.push({ message: "no workflow could be read from the file", line: 0, column: 0 });
  }
  // the same error can be reported by both passes: keep each once
  const seen = new Set();
  return found.filter((e) => {
    const key = `${e.line}:${e.column}:${e.message}`;
    return seen.has(key) ? false : (seen.add(key), true);
  });
}

async function main() {
  const out = {};
  for (const name of process.argv.slice(2)) {
    out[name] = await validate(name);
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((error) => {
  process.stderr.write(`validate-workflow: ${error?.stack ?? error}\n`);
  process.exit(2);
});
