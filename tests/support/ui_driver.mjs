// Drives headless Chromium over the DevTools protocol for tests/e2e_ui.rs (Node >= 20 with
// --experimental-websocket; no npm packages). Loads one URL once, then samples the page's
// state every second without reloading it, one JSON line per sample on stdout:
//   {"t": ms, "phase", "weight", "updates", "loadedAt", "failed"}
// until a sample's phase is one of --until (comma-separated) or --seconds pass; the last line
// is {"final": true, "text": <main's innerText>, ...}. With --screenshot PATH, a PNG of the
// whole page is written at the end, at --width x --height CSS pixels.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const url = args.url;
const seconds = Number(args.seconds ?? 0);
const until = (args.until ?? "").split(",").filter(Boolean);
const width = Number(args.width ?? 1000);
const height = Number(args.height ?? 800);
const chromium = args.chromium ?? "chromium";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const dir = mkdtempSync(join(tmpdir(), "pennant-ui-"));
const browser = spawn(
  chromium,
  ["--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
   "--remote-debugging-port=0", `--user-data-dir=${dir}`, `--window-size=${width},${height}`, "about:blank"],
  { stdio: ["ignore", "ignore", "pipe"] },
);
let stderr = "";
browser.stderr.on("data", (d) => { stderr += d; });
const done = (code) => {
  try { browser.kill("SIGKILL"); } catch {}
  try { rmSync(dir, { recursive: true, force: true }); } catch {}
  process.exit(code);
};

async function main() {
  const portFile = join(dir, "DevToolsActivePort");
  for (let i = 0; i < 300 && !existsSync(portFile); i++) await sleep(100);
  if (!existsSync(portFile)) throw new Error("chromium did not start: " + stderr.slice(-2000));
  const port = readFileSync(portFile, "utf8").split("\n")[0];
  let target;
  // chromium writes DevToolsActivePort before its endpoint answers: on a loaded machine the first
  // fetches are refused ("fetch failed"), so a failed fetch is one more try, as a missing page is
  for (let i = 0; i < 100 && !target; i++) {
    const list = await fetch(`http://127.0.0.1:${port}/json/list`)
      .then((r) => r.json())
      .catch(() => []);
    target = list.find((t) => t.type === "page");
    if (!target) await sleep(100);
  }
  if (!target) throw new Error("chromium's DevTools endpoint listed no page in 10 s: " + stderr.slice(-2000));
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((res, rej) => { ws.onopen = res; ws.onerror = rej; });
  let id = 0;
  const pending = new Map();
  const listeners = [];
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.id && pending.has(msg.id)) {
      const { res, rej } = pending.get(msg.id);
      pending.delete(msg.id);
      msg.error ? rej(new Error(JSON.stringify(msg.error))) : res(msg.result);
    } else if (msg.method) {
      listeners.forEach((l) => l(msg));
    }
  };
  const send = (method, params = {}) =>
    new Promise((res, rej) => { const i = ++id; pending.set(i, { res, rej }); ws.send(JSON.stringify({ id: i, method, params })); });
  const evaluate = async (expr) => (await send("Runtime.evaluate", { expression: expr, returnByValue: true })).result.value;

  await send("Page.enable");
  await send("Emulation.setDeviceMetricsOverride", { width, height, deviceScaleFactor: 1, mobile: width < 600 });
  const loaded = new Promise((res) => listeners.push((m) => m.method === "Page.loadEventFired" && res()));
  await send("Page.navigate", { url });
  await loaded;
  const sample = `JSON.stringify({
    phase: document.getElementById("phase")?.textContent ?? null,
    weight: document.getElementById("weight")?.textContent ?? null,
    updates: Number(document.getElementById("updates")?.textContent ?? 0),
    failed: document.getElementById("failed")?.textContent ?? null,
    loadedAt: window.pennantLoadedAt ?? null })`;
  const start = Date.now();
  for (;;) {
    const s = JSON.parse(await evaluate(sample));
    console.log(JSON.stringify({ t: Date.now() - start, ...s }));
    if (until.includes(s.phase) || Date.now() - start >= seconds * 1000) break;
    await sleep(1000);
  }
  // one more poll cycle, so that the last update's markup is in place
  if (seconds > 0) await sleep(1600);
  const text = await evaluate(`document.querySelector("main")?.innerText ?? ""`);
  const s = JSON.parse(await evaluate(sample));
  if (args.screenshot) {
    const m = await send("Page.getLayoutMetrics");
    const h = Math.ceil(m.cssContentSize?.height ?? height);
    await send("Emulation.setDeviceMetricsOverride", { width, height: Math.max(h, height), deviceScaleFactor: 1, mobile: width < 600 });
    const shot = await send("Page.captureScreenshot", { format: "png" });
    writeFileSync(args.screenshot, Buffer.from(shot.data, "base64"));
  }
  console.log(JSON.stringify({ final: true, t: Date.now() - start, ...s, text }));
  ws.close();
}

main().then(() => done(0), (e) => { console.error(String(e?.stack ?? e)); done(1); });
