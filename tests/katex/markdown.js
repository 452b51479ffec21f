// Reads Markdown from stdin and prints the HTML a plain converter makes of it (marked, which knows
// no maths): the tests check that the maths comes through it unchanged (see tests/test_doc_render.py).
const { marked } = require("marked");

let input = "";
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => { process.stdout.write(marked.parse(input)); });
