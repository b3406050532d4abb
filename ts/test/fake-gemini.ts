// Gemini played by a local HTTP server speaking its wire format: `streamGenerateContent?alt=sse`
// for a reply (one SSE event per chunk), `generateContent` for a chat's title, and key checks
// (`GET /v1beta/models`).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export const API_KEY = "AIza-test-key-1234";
/** The reply the fake streams by default, one chunk per event. */
export const CHUNKS = ["Hello ", "from ", "the fake Gemini!"];
export const REPLY = CHUNKS.join("");
export const TITLE = "Greeting Chat";

export type ProviderCall = {
  kind: "stream" | "complete";
  model: string;
  apiKey: string | null;
  body: unknown;
};

/** An error answer instead of a streamed reply: status, JSON body and optional Retry-After. */
export type Failure = { status: number; body: unknown; retryAfter?: string };

export type FakeGeminiOptions = {
  /** The only key it accepts. */
  apiKey: string;
  /** The streamed reply's chunks, given the last thing the user said. */
  reply(said: string): string[];
  /** What `generateContent` answers (the chat's title). */
  title: string;
  /** Given the last thing the user said, an error to answer instead of streaming (none by default). */
  failure(said: string): Failure | undefined;
};

type GeminiRequest = { contents?: { role?: string; parts?: { text?: string }[] }[] };

export class FakeGemini {
  readonly calls: ProviderCall[] = [];
  private readonly server: Server;
  /** Key checks wait for this while `holdKeyChecks()` is in force. */
  private keyChecksOpen: Promise<void> = Promise.resolve();
  private openKeyChecksNow: () => void = () => {};

  private readonly options: FakeGeminiOptions;

  /** Without options: accepts `API_KEY`, streams `CHUNKS`, titles `TITLE`. */
  constructor(options: Partial<FakeGeminiOptions> = {}) {
    this.options = { apiKey: API_KEY, reply: () => CHUNKS, title: TITLE, failure: () => undefined, ...options };
    this.server = createServer((request, response) => void this.handle(request, response));
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    const { port } = this.server.address() as AddressInfo;
    return `http://127.0.0.1:${port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  streamCalls(): ProviderCall[] {
    return this.calls.filter((call) => call.kind === "stream");
  }

  /** Key checks answer only after `openKeyChecks()`: a call that is slow for as long as a test wants. */
  holdKeyChecks(): void {
    this.keyChecksOpen = new Promise((resolve) => (this.openKeyChecksNow = resolve));
  }

  openKeyChecks(): void {
    this.openKeyChecksNow();
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    let raw = "";
    for await (const chunk of request) raw += chunk;
    const url = new URL(request.url ?? "/", "http://fake");
    const apiKey = request.headers["x-goog-api-key"];
    const keyOk = apiKey === this.options.apiKey;
    if (request.method === "GET" && url.pathname === "/v1beta/models") {
      await this.keyChecksOpen;
      return keyOk ? json(response, 200, { models: [] }) : invalidKey(response);
    }
    const match = /^\/v1beta\/models\/([^/:]+):(streamGenerateContent|generateContent)$/.exec(
      url.pathname,
    );
    if (request.method !== "POST" || match === null) {
      return json(response, 404, { error: { code: 404, message: "Not found", status: "NOT_FOUND" } });
    }
    const streaming = match[2] === "streamGenerateContent";
    const body = (raw === "" ? null : JSON.parse(raw)) as GeminiRequest | null;
    this.calls.push({
      kind: streaming ? "stream" : "complete",
      model: decodeURIComponent(match[1] ?? ""),
      apiKey: typeof apiKey === "string" ? apiKey : null,
      body,
    });
    if (!keyOk) return invalidKey(response);
    if (!streaming) {
      const candidate = { content: { role: "model", parts: [{ text: this.options.title }] } };
      return json(response, 200, { candidates: [{ ...candidate, finishReason: "STOP" }] });
    }
    if (url.searchParams.get("alt") !== "sse") {
      return json(response, 400, { error: { code: 400, message: "expected alt=sse" } });
    }
    const said = body?.contents?.at(-1)?.parts?.map((part) => part.text ?? "").join("") ?? "";
    const failure = this.options.failure(said);
    if (failure !== undefined) {
      if (failure.retryAfter !== undefined) response.setHeader("retry-after", failure.retryAfter);
      return json(response, failure.status, failure.body);
    }
    await streamReply(response, this.options.reply(said));
  }
}

function json(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { "content-type": "application/json; charset=UTF-8" });
  response.end(JSON.stringify(body));
}

function invalidKey(response: ServerResponse): void {
  json(response, 400, {
    error: {
      code: 400,
      message: "API key not valid. Please pass a valid API key.",
      status: "INVALID_ARGUMENT",
      details: [{ reason: "API_KEY_INVALID" }],
    },
  });
}

/** One SSE event per chunk, 30 ms apart; the last one finishes with usage. */
async function streamReply(response: ServerResponse, chunks: string[]): Promise<void> {
  response.writeHead(200, { "content-type": "text/event-stream" });
  for (const [index, text] of chunks.entries()) {
    const last = index === chunks.length - 1;
    const candidate = {
      content: { role: "model", parts: [{ text }] },
      ...(last ? { finishReason: "STOP" } : {}),
    };
    const event = {
      candidates: [candidate],
      ...(last ? { usageMetadata: { promptTokenCount: 5, candidatesTokenCount: 3 } } : {}),
    };
    if (index > 0) await new Promise((resolve) => setTimeout(resolve, 30));
    if (response.destroyed) return;
    response.write(`data: ${JSON.stringify(event)}\r\n\r\n`);
  }
  response.end();
}
