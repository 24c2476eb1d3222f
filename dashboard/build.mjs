// Builds the dashboard into ../tsrmon/dashboard/static/ (git-ignored):
// index.html plus content-hashed assets/app-<hash>.js and .css bundling
// socket.io-client and uPlot. Usage: npm ci && npm run build [-- --watch]

import { existsSync, readdirSync, rmSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, basename, relative } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "tsrmon", "dashboard", "static");
const assets = join(out, "assets");
const watch = process.argv.includes("--watch");

function writeIndex(metafile) {
  const outputs = Object.entries(metafile.outputs);
  const js = outputs.find(([file, o]) => o.entryPoint && file.endsWith(".js"));
  const css = outputs.find(([file]) => file.endsWith(".css"));
  if (!js || !css) throw new Error("esbuild produced no app .js/.css");
  const page = readFileSync(join(here, "src", "index.html"), "utf8")
    .replace("%JS%", basename(js[0]))
    .replace("%CSS%", basename(css[0]));
  writeFileSync(join(out, "index.html"), page);
  const size = (f) => `${(metafile.outputs[f].bytes / 1024).toFixed(0)} KiB`;
  console.log(`dashboard: ${relative(process.cwd(), join(out, "index.html"))}, ${basename(js[0])} (${size(js[0])}), ${basename(css[0])} (${size(css[0])})`);
}

// The licences of every npm package in the bundle (MIT notices travel with the code).
function writeLicences(metafile) {
  const packages = new Set();
  for (const input of Object.keys(metafile.inputs)) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (m) packages.add(m[1]);
  }
  const parts = [];
  for (const name of [...packages].sort()) {
    const dir = join(here, "node_modules", name);
    const meta = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
    const file = readdirSync(dir).find((f) => /^licen[cs]e/i.test(f));
    const text = file ? readFileSync(join(dir, file), "utf8").trim() : `License: ${meta.license}`;
    parts.push(`${name} ${meta.version} (${meta.license})\n\n${text}\n`);
  }
  writeFileSync(join(assets, "THIRD-PARTY-LICENSES.txt"), parts.join("\n" + "-".repeat(72) + "\n\n"));
}

rmSync(out, { recursive: true, force: true });
mkdirSync(assets, { recursive: true });

const options = {
  absWorkingDir: here,
  entryPoints: ["src/main.js"],
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: !watch,
  sourcemap: "linked",
  outdir: assets,
  entryNames: "app-[hash]",
  assetNames: "[name]-[hash]",
  metafile: true,
  logLevel: "warning",
  legalComments: "none", // the full licences are in assets/THIRD-PARTY-LICENSES.txt
  plugins: [{
    name: "index-html",
    setup(build) {
      build.onEnd((result) => {
        if (result.errors.length) return;
        writeIndex(result.metafile);
        writeLicences(result.metafile);
      });
    },
  }],
};

if (watch) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
  console.log("dashboard: watching src/ (Ctrl-C to stop)");
} else {
  await esbuild.build(options);
}
