// Use the sidecar's keys API from a Node.js application with the built-in fetch.
//
// Two ways to check an incoming API key:
//   - verify(key): ask the sidecar for every request; the application never stores the keys.
//   - fetchKeys() once, then watch() to follow rotations, and check(key) locally.
//
// Build with `npm ci && npx tsc` in this directory, then run:
//   SIDECAR_TOKEN_FILE=/run/sidecar/token node dist/verify.js keys
//   printf '%s\n' "$KEY" | SIDECAR_TOKEN_FILE=... node dist/verify.js verify
//   SIDECAR_TOKEN_FILE=... node dist/verify.js watch 1
// SIDECAR_URL sets the sidecar's address (default http://127.0.0.1:8910).

import { createHash, timingSafeEqual } from "node:crypto";
import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

export interface Keys {
  current: string;
  previous: string | null;
  version_id: string;
  created_date: string | null;
  loaded_at: string;
  stale: boolean;
}

export interface VerifyResult {
  valid: boolean;
  matched: "current" | "previous" | null;
}

export class SidecarError extends Error {
  constructor(
    message: string,
    readonly status: number | null,
  ) {
    super(message);
    this.name = "SidecarError";
  }
}

const TOKEN_HEADER = "X-Sidecar-Token";
// Statuses that retrying cannot fix; watch() stops on them.
const FATAL_STATUSES = new Set([400, 404, 405]);

export class SidecarClient {
  keys: Keys | null = null;
  private etag: string | null = null;
  private token: string | null = null;

  constructor(
    private readonly baseUrl: string,
    private readonly tokenFile: string,
    private readonly requestTimeoutMs = 5_000,
  ) {}

  /** Fetch the pair with GET /v1/keys and keep it in `keys`. */
  async fetchKeys(): Promise<Keys> {
    const response = await this.request("GET", "/v1/keys");
    return this.store(response);
  }

  /** Long-poll for a newer version: the new pair, or null when the wait ends without one. */
  async waitForChange(waitSeconds = 60): Promise<Keys | null> {
    if (this.etag === null) {
      return this.fetchKeys();
    }
    const response = await this.request(
      "GET",
      `/v1/keys?wait=${waitSeconds}`,
      { "If-None-Match": this.etag },
      waitSeconds * 1_000 + this.requestTimeoutMs,
    );
    if (response.status === 304) {
      return null;
    }
    return this.store(response);
  }

  /** Yield the pair now and after every rotation; errors back off exponentially with jitter. */
  async *watch(waitSeconds = 60): AsyncGenerator<Keys> {
    let failures = 0;
    let lastVersion: string | null = null;
    for (;;) {
      let keys: Keys | null;
      try {
        keys = await this.waitForChange(waitSeconds);
      } catch (error) {
        const status = error instanceof SidecarError ? error.status : null;
        if (status !== null && FATAL_STATUSES.has(status)) {
          throw error;
        }
        failures += 1;
        const ceiling = Math.min(30_000, 500 * 2 ** (failures - 1));
        const delay = ceiling * (0.5 + Math.random() / 2);
        console.error(`sidecar watch failed (${String(error)}); retrying in ${Math.round(delay)} ms`);
        await sleep(delay);
        continue;
      }
      failures = 0;
      if (keys !== null && keys.version_id !== lastVersion) {
        lastVersion = keys.version_id;
        yield keys;
      }
    }
  }

  /** Ask the sidecar whether `key` is the current or the previous key (POST /v1/verify). */
  async verify(key: string): Promise<VerifyResult> {
    const response = await this.request(
      "POST",
      "/v1/verify",
      { "Content-Type": "application/json" },
      this.requestTimeoutMs,
      JSON.stringify({ key }),
    );
    if (response.status !== 200) {
      throw await errorFrom(response);
    }
    return (await response.json()) as VerifyResult;
  }

  /** Check `key` against the cached pair without a request; both comparisons always run. */
  check(key: string): VerifyResult {
    if (this.keys === null) {
      throw new SidecarError("no key pair cached yet; call fetchKeys() or watch() first", null);
    }
    const presented = digest(key);
    const isCurrent = timingSafeEqual(presented, digest(this.keys.current));
    const isPrevious =
      this.keys.previous !== null && timingSafeEqual(presented, digest(this.keys.previous));
    if (isCurrent) {
      return { valid: true, matched: "current" };
    }
    return isPrevious ? { valid: true, matched: "previous" } : { valid: false, matched: null };
  }

  private async store(response: Response): Promise<Keys> {
    if (response.status !== 200) {
      throw await errorFrom(response);
    }
    this.keys = (await response.json()) as Keys;
    this.etag = response.headers.get("ETag");
    return this.keys;
  }

  private async request(
    method: string,
    path: string,
    headers: Record<string, string> = {},
    timeoutMs = this.requestTimeoutMs,
    body?: string,
  ): Promise<Response> {
    // On 403 the token file is read again once: the sidecar may have written a new one.
    for (const reload of [false, true]) {
      const init: RequestInit = {
        method,
        headers: { ...headers, [TOKEN_HEADER]: await this.loadToken(reload) },
        signal: AbortSignal.timeout(timeoutMs),
      };
      if (body !== undefined) {
        init.body = body;
      }
      let response: Response;
      try {
        response = await fetch(this.baseUrl + path, init);
      } catch (error) {
        const reason = `cannot reach the sidecar at ${this.baseUrl}: ${String(error)}`;
        throw new SidecarError(reason, null);
      }
      if (response.status !== 403 || reload) {
        return response;
      }
      await response.body?.cancel();
    }
    throw new Error("unreachable");
  }

  private async loadToken(reload: boolean): Promise<string> {
    if (this.token === null || reload) {
      try {
        this.token = (await readFile(this.tokenFile, "utf8")).trim();
      } catch (error) {
        const reason = `cannot read the token file ${this.tokenFile}: ${String(error)}`;
        throw new SidecarError(reason, null);
      }
    }
    return this.token;
  }
}

function digest(key: string): Buffer {
  // Equal-length digests, so the comparison time does not depend on the key length.
  return createHash("sha256").update(key, "utf8").digest();
}

async function errorFrom(response: Response): Promise<SidecarError> {
  let message = "no error message";
  try {
    const document = (await response.json()) as { error?: string };
    message = document.error ?? message;
  } catch {
    // The body was not JSON, so the status is the whole message.
  }
  return new SidecarError(`the sidecar returned ${response.status}: ${message}`, response.status);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8").replace(/\r?\n$/, "");
}

async function main(argv: string[]): Promise<number> {
  const tokenFile = process.env["SIDECAR_TOKEN_FILE"];
  if (tokenFile === undefined) {
    console.error(
      "SIDECAR_TOKEN_FILE is not set; expected the path of the token file shared with the sidecar",
    );
    return 2;
  }
  const baseUrl = process.env["SIDECAR_URL"] ?? "http://127.0.0.1:8910";
  const client = new SidecarClient(baseUrl, tokenFile);
  const [command, argument] = argv;
  switch (command) {
    case "keys":
      // Printing the keys is for this demonstration only; an application keeps them in memory.
      console.log(JSON.stringify(await client.fetchKeys()));
      return 0;
    case "verify": {
      // The key comes on standard input, so it does not show in the process list.
      const key = await readStdin();
      const result = await client.verify(key);
      await client.fetchKeys();
      const local = client.check(key);
      if (local.matched !== result.matched) {
        const matches = `local: ${String(local.matched)}, sidecar: ${String(result.matched)}`;
        console.error(`the local check and the sidecar disagree (${matches})`);
        return 1;
      }
      console.log(JSON.stringify(result));
      return result.valid ? 0 : 1;
    }
    case "watch": {
      // Print the version now and after every rotation; stop after `argument` changes if given.
      const limit = argument === undefined ? Infinity : Number(argument);
      let changes = -1;
      for await (const keys of client.watch(60)) {
        // Only the version is printed: an application keeps the keys in memory.
        console.log(JSON.stringify({ version_id: keys.version_id }));
        changes += 1;
        if (changes >= limit) {
          return 0;
        }
      }
      return 0;
    }
    default:
      console.error("usage: verify.js keys | verify (key on standard input) | watch [CHANGES]");
      return 2;
  }
}

process.exitCode = await main(process.argv.slice(2)).catch((error: unknown) => {
  console.error(String(error));
  return 1;
});
