#!/usr/bin/env node
// Runs a wasm32-wasip1 test binary under Node's WASI (preview1). Cargo uses it through
// CARGO_TARGET_WASM32_WASIP1_RUNNER="node scripts/wasm-test-runner.mjs":
//   node wasm-test-runner.mjs <file.wasm> [libtest args...]
// The arguments are passed through so libtest's filters and flags work; the process exits with
// the module's exit code. libtest needs no files; the current directory is pre-opened anyway so
// a test may read fixtures relative to the crate root.
//
// wasm has no unwinding: a panicking test aborts the whole module (a trap), and libtest's output
// capture swallows the panic message. On a trap the runner therefore runs the module once more
// with --nocapture so the message of the first failing test is shown, then exits 101 like a
// failed native test binary.
import { readFile } from "node:fs/promises";
import process from "node:process";

// Node 20 warns that WASI is experimental on every run; that is noise in test output.
const emitWarning = process.emitWarning;
process.emitWarning = (warning, ...rest) => {
  const text = typeof warning === "string" ? warning : warning?.message ?? "";
  if (text.includes("WASI is an experimental feature")) return;
  emitWarning.call(process, warning, ...rest);
};
// Imported after the filter above is in place (static imports would run first).
const { WASI } = await import("node:wasi");

const [file, ...args] = process.argv.slice(2);
if (!file) {
  process.stderr.write("usage: wasm-test-runner.mjs <module.wasm> [args...]\n");
  process.exit(2);
}
const module = await WebAssembly.compile(await readFile(file));

async function run(argv) {
  const wasi = new WASI({
    version: "preview1",
    args: [file, ...argv],
    env: process.env,
    preopens: { ".": process.cwd() },
    returnOnExit: true,
  });
  const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
  return wasi.start(instance) ?? 0;
}

try {
  process.exitCode = await run(args);
} catch (error) {
  process.stderr.write(`\nwasm-test-runner: ${file} trapped: ${error?.message ?? error}\n`);
  const isTestHarness = !args.includes("--nocapture") && !args.includes("--list");
  if (isTestHarness) {
    process.stderr.write(
      "wasm-test-runner: a test panicked (wasm cannot unwind); rerunning with --nocapture " +
        "to show its message:\n\n",
    );
    try {
      await run([...args, "--nocapture", "--test-threads=1"]);
    } catch {
      // the same trap again; its message has been printed this time
    }
  }
  process.exitCode = 101;
}
