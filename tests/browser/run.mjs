// Drives headless Chromium (Debian's /usr/bin/chromium, through playwright-core) against
// a running broker; started by tests/tests/browser.rs, which starts the broker.
//
//   node run.mjs mqtt <ws url> <wss url> <server cert PEM>
//       serves page.html and MQTT.js's browser bundle on 127.0.0.1 (ephemeral port); the
//       page connects over WebSocket (MQTT 3.1.1) and over WSS (MQTT 5.0), subscribes,
//       publishes at QoS 0, 1 and 2 and lists what it receives. The WSS certificate is
//       trusted by its public key's SHA-256 (--ignore-certificate-errors-spki-list).
//   node run.mjs console <console url> <client id> <topic filter> <retained topic> <png>
//       opens the web console, waits until the client, its subscription and the retained
//       message are shown, saves a screenshot, then disconnects the client with its
//       button and waits until it is gone.
//
// Prints one line per check and exits 0 only if every check passed. Every wait is
// bounded.

import { chromium } from "playwright-core";
import { createServer } from "node:http";
import { readFileSync, mkdirSync } from "node:fs";
import { createHash, X509Certificate } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = 20_000;

// Without the background-networking flags Chromium's own connections get in the way
// (and are refused) on machines without outside network.
const ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-dev-shm-usage",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

let failures = 0;
let passes = 0;
function check(ok, what, detail = "") {
  if (ok) {
    passes += 1;
    console.log(`ok   ${what}`);
  } else {
    failures += 1;
    console.log(`FAIL ${what}${detail ? ": " + detail : ""}`);
  }
}

async function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...ARGS, ...extraArgs],
    timeout: WAIT_MS,
  });
}

/// The base64 SHA-256 of a certificate's SubjectPublicKeyInfo, as Chromium's SPKI list
/// wants it.
function spkiHash(pemPath) {
  const cert = new X509Certificate(readFileSync(pemPath));
  const spki = cert.publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

/// Serves the test page and MQTT.js's browser bundle on 127.0.0.1, ephemeral port.
async function pageServer() {
  const files = {
    "/": ["text/html", readFileSync(join(here, "page.html"))],
    "/mqtt.min.js": [
      "text/javascript",
      readFileSync(join(here, "node_modules/mqtt/dist/mqtt.min.js")),
    ],
  };
  const server = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    const file = files[path];
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "Content-Type": file[0] }).end(file[1]);
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return server;
}

async function mqttPage(browser, base, url, version, id) {
  const page = await browser.newPage();
  page.on("console", (m) => console.log(`     [page ${id}] ${m.text()}`));
  const address = `${base}/?url=${encodeURIComponent(url)}&version=${version}&id=${id}`;
  await page.goto(address, { timeout: WAIT_MS });
  let status = "";
  try {
    await page.waitForFunction(
      () => /^(done|error)/.test(document.getElementById("status").textContent),
      null,
      { timeout: WAIT_MS },
    );
  } catch (e) {
    // Reported below with whatever the page shows.
  }
  status = await page.textContent("#status");
  const received = await page.$$eval("#received li", (items) => items.map((li) => li.textContent));
  await page.close();
  return { status, received };
}

async function runMqtt([wsUrl, wssUrl, certPath]) {
  const server = await pageServer();
  const base = `http://127.0.0.1:${server.address().port}`;
  const browser = await launch([`--ignore-certificate-errors-spki-list=${spkiHash(certPath)}`]);
  try {
    for (const [name, url, version] of [
      ["ws", wsUrl, 4],
      ["wss", wssUrl, 5],
    ]) {
      const id = `page-${name}`;
      const { status, received } = await mqttPage(browser, base, url, version, id);
      check(status === "done", `${name}: MQTT ${version === 5 ? "5.0" : "3.1.1"} page finished`, status);
      for (const qos of [0, 1, 2]) {
        const line = `browser/${id}/qos${qos} QoS ${qos}: hello at QoS ${qos}`;
        check(received.includes(line), `${name}: received "${line}"`, JSON.stringify(received));
      }
      check(received.length === 3, `${name}: exactly three messages`, JSON.stringify(received));
    }
  } finally {
    await browser.close();
    server.close();
  }
}

async function runConsole([url, clientId, filter, topic, screenshot]) {
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1360, height: 1000 } });
    page.on("console", (m) => console.log(`     [console] ${m.text()}`));
    const response = await page.goto(url, { timeout: WAIT_MS });
    check(response.status() === 200, "console page loads", String(response.status()));
    const shows = async (selector, text, what) => {
      try {
        await page.waitForFunction(
          ([s, t]) => document.querySelector(s)?.textContent.includes(t),
          [selector, text],
          { timeout: WAIT_MS },
        );
        check(true, what);
      } catch (e) {
        const shown = await page.textContent(selector).catch(() => "(nothing)");
        check(false, what, `${selector} shows: ${shown}`);
      }
    };
    await shows("#clients", clientId, `clients table shows ${clientId}`);
    await shows("#subscriptions", filter, `subscriptions table shows ${filter}`);
    await shows("#retained", topic, `retained table shows ${topic}`);
    await shows("#version", "mqtt-broker", "version shown");
    await shows("#listeners", "127.0.0.1:", "listeners shown");
    // A few polls, so that the rate chart has a line to show.
    await page.waitForFunction(
      () => /\d/.test(document.getElementById("r-msg-in").textContent),
      null,
      { timeout: WAIT_MS },
    ).then(() => check(true, "rates shown"), () => check(false, "rates shown"));
    await page.waitForTimeout(8_000);
    mkdirSync(dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(`     screenshot: ${screenshot}`);

    // The disconnect button.
    const row = page.locator(`#clients tr[data-client-id="${clientId}"]`);
    await row.locator("button").click({ timeout: WAIT_MS });
    try {
      await row.waitFor({ state: "detached", timeout: WAIT_MS });
      check(true, `disconnect button removes ${clientId}`);
    } catch (e) {
      check(false, `disconnect button removes ${clientId}`, await page.textContent("#status"));
    }
  } finally {
    await browser.close();
  }
}

const [mode, ...args] = process.argv.slice(2);
const runs = { mqtt: runMqtt, console: runConsole };
if (!runs[mode]) {
  console.error("usage: node run.mjs mqtt WS_URL WSS_URL CERT_PEM | console URL CLIENT_ID FILTER TOPIC PNG");
  process.exit(2);
}
// The whole run is bounded too.
const watchdog = setTimeout(() => {
  console.log("FAIL timed out");
  process.exit(1);
}, 120_000);
try {
  await runs[mode](args);
} catch (e) {
  check(false, "run", e.stack || String(e));
}
clearTimeout(watchdog);
console.log(`${mode}: ${passes} passed, ${failures} failed`);
process.exit(failures === 0 && passes > 0 ? 0 : 1);
