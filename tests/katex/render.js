// Reads a JSON list of {tex, display} from stdin; renders each with KaTeX in strict mode;
// prints a JSON list of {tex, error} for those that fail (an empty list when all render).
const katex = require("katex");

let input = "";
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const failures = [];
  for (const { tex, display } of JSON.parse(input)) {
    try {
      katex.renderToString(tex, { displayMode: display, throwOnError: true, strict: "error" });
    } catch (error) {
      failures.push({ tex, error: String(error.message) });
    }
  }
  process.stdout.write(JSON.stringify(failures));
});
