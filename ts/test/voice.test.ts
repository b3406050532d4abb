// Voice calls checked with LiveKit's official server SDK (livekit-server-sdk): its
// TokenVerifier reads the tokens `voice.start` mints (grants, room, identity, expiry, the
// agent dispatch in protobuf JSON), and webhooks signed the way LiveKit signs them (its
// AccessToken with the body's sha256, verified by its own WebhookReceiver) are accepted by
// the server, in any order; tampered or foreign ones are refused.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, test } from "node:test";
import type { TRPCClient } from "@trpc/client";
import {
  AccessToken,
  ParticipantInfo,
  Room,
  RoomConfiguration,
  TokenVerifier,
  WebhookEvent,
  type WebhookEventNames,
  WebhookReceiver,
} from "livekit-server-sdk";
import type { AppRouter } from "../../bindings/index.ts";
import { startServer, type RunningServer } from "./helpers.ts";
import { signedInClient, signUp } from "./signed-in.ts";

const API_KEY = "APIvoiceTest";
const API_SECRET = "voice-test-secret-with-at-least-32-characters";
const AGENT = "alias-assistant";

let server: RunningServer;
let client: TRPCClient<AppRouter>;
let origin: string;

before(async () => {
  server = await startServer({
    ALIAS_LIVEKIT_URL: "wss://livekit.example.com",
    ALIAS_LIVEKIT_API_KEY: API_KEY,
    ALIAS_LIVEKIT_API_SECRET: API_SECRET,
    ALIAS_LIVEKIT_AGENT_NAME: AGENT,
  });
  origin = server.url.replace(/\/trpc$/, "");
  client = signedInClient(server.url, await signUp(server.url));
});

after(async () => {
  await server?.stop();
});

/** A webhook as LiveKit's server sends it: the event in protobuf JSON, and a token from the
 * API key and secret carrying the body's base64 SHA-256. */
async function signWebhook(event: WebhookEvent, secret = API_SECRET) {
  const body = event.toJsonString();
  const token = new AccessToken(API_KEY, secret, { ttl: "5m" });
  token.sha256 = createHash("sha256").update(body).digest("base64");
  return { body, authorization: await token.toJwt() };
}

/** A webhook event. (The SDK's `WebhookEvent` class re-initialises `event` after the
 * constructor's fields, so it is set afterwards.) */
function webhookEvent(
  name: WebhookEventNames,
  fields: { id: string; createdAt: bigint; room: Room; participant?: ParticipantInfo },
): WebhookEvent {
  const event = new WebhookEvent(fields);
  event.event = name;
  return event;
}

async function post(body: string, authorization: string): Promise<number> {
  const response = await fetch(`${origin}/webhooks/livekit`, {
    method: "POST",
    headers: { "content-type": "application/webhook+json", authorization },
    body,
  });
  await response.arrayBuffer();
  return response.status;
}

describe("voice with livekit-server-sdk", () => {
  test("TokenVerifier accepts voice.start's token with the expected grants and dispatch", async () => {
    const me = await client.users.me.query();
    const started = await client.voice.start.mutate({});
    const claims = await new TokenVerifier(API_KEY, API_SECRET).verify(started.token);
    assert.equal(claims.iss, API_KEY);
    assert.equal(claims.sub, me.id);
    assert.equal(claims.name, me.name);
    assert.deepEqual(claims.video, {
      room: started.roomName,
      roomJoin: true,
      canPublish: true,
      canSubscribe: true,
      canPublishData: true,
    });
    const exp = (claims.exp ?? 0) * 1000;
    assert.ok(Math.abs(exp - Date.parse(started.expiresAt)) < 1000, "exp is expiresAt");
    assert.ok(exp - Date.now() <= 600_000 && exp > Date.now(), "short-lived");
    assert.equal(started.serverUrl, "wss://livekit.example.com");

    // The room configuration reads as LiveKit's protobuf message (unknown names would throw).
    const config = RoomConfiguration.fromJson(claims.roomConfig as never);
    assert.equal(config.name, started.roomName);
    assert.equal(config.agents.length, 1);
    assert.equal(config.agents[0]?.agentName, AGENT);
    const metadata = JSON.parse(config.agents[0]?.metadata ?? "{}");
    assert.equal(metadata.voiceSessionId, started.voiceSessionId);
    assert.equal(metadata.chatSessionId, started.chatSessionId);

    // Another secret does not verify it.
    await assert.rejects(new TokenVerifier(API_KEY, "x".repeat(40)).verify(started.token));

    // The agent appends with the credential from its dispatch metadata.
    const agent = signedInClient(server.url, metadata.agentToken);
    const appended = await agent.voice.transcript.append.mutate({
      voiceSessionId: started.voiceSessionId,
      segments: [{ id: "a1", speaker: "assistant", text: "Hello, how can I help?", startMs: 0 }],
    });
    assert.deepEqual(appended, { appended: 1, duplicates: 0 });
    const call = await client.voice.sessions.get.query({ id: started.voiceSessionId });
    assert.equal(call.transcript[0]?.text, "Hello, how can I help?");
  });

  test("webhooks signed as LiveKit signs them are accepted, in any order, once", async () => {
    const me = await client.users.me.query();
    const started = await client.voice.start.mutate({});
    const now = BigInt(Math.floor(Date.now() / 1000));
    const room = new Room({ sid: "RM_voice", name: started.roomName });
    const user = new ParticipantInfo({ sid: "PA_user", identity: me.id });
    const events = [
      webhookEvent("room_finished", { id: "EV_ts4", createdAt: now - 10n, room }),
      webhookEvent("participant_left", { id: "EV_ts3", createdAt: now - 20n, room, participant: user }),
      webhookEvent("participant_joined", { id: "EV_ts2", createdAt: now - 119n, room, participant: user }),
      webhookEvent("room_started", { id: "EV_ts1", createdAt: now - 120n, room }),
    ];
    const receiver = new WebhookReceiver(API_KEY, API_SECRET);
    for (const event of events) {
      const { body, authorization } = await signWebhook(event);
      // The SDK's own receiver accepts the signature: it is LiveKit's.
      assert.equal((await receiver.receive(body, authorization)).id, event.id);
      assert.equal(await post(body, authorization), 200);
    }
    const again = await signWebhook(events[0] as WebhookEvent);
    assert.equal(await post(again.body, again.authorization), 200, "a redelivery is accepted");

    const tampered = await signWebhook(events[3] as WebhookEvent);
    assert.equal(await post(tampered.body.replace("room_started", "room_finished"), tampered.authorization), 401);
    const foreign = await signWebhook(events[3] as WebhookEvent, "another-secret-with-at-least-32-characters");
    assert.equal(await post(foreign.body, foreign.authorization), 401);

    const call = await client.voice.sessions.get.query({ id: started.voiceSessionId });
    assert.equal(call.status, "ended");
    assert.equal(call.durationSeconds, 100);
    assert.equal(Date.parse(call.startedAt), Number(now - 120n) * 1000);
  });
});
