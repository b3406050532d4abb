// tRPC's React Query integration (`@trpc/tanstack-react-query`) over createAliasClient, written
// as tRPC's docs write it. ts/test/react.test.tsx renders these components against the real
// server, so the patterns cannot regress. The hooks are the app's; the elements are DOM ones
// here (the app renders <View>/<Text>/<FlatList> with the same data).
import {
  QueryClient,
  QueryClientProvider,
  skipToken,
  useInfiniteQuery,
  useMutation,
  useQuery,
  useQueryClient,
} from "@tanstack/react-query";
import { createTRPCContext, useSubscription } from "@trpc/tanstack-react-query";
import { useState, type ReactNode } from "react";
import type { Message } from "../../bindings/index.ts";
import { isAliasError, type AliasClient, type AppRouter } from "../client.ts";

export const { TRPCProvider, useTRPC } = createTRPCContext<AppRouter>();

/** The app's root: one QueryClient and one client for the app's lifetime. */
export function AliasProvider(props: { client: AliasClient; queryClient: QueryClient; children: ReactNode }) {
  return (
    <QueryClientProvider client={props.queryClient}>
      <TRPCProvider trpcClient={props.client} queryClient={props.queryClient}>
        {props.children}
      </TRPCProvider>
    </QueryClientProvider>
  );
}

/** What a failed call shows: the server's reason when it gave one. */
export function errorText(error: unknown): string {
  if (isAliasError(error, "api_key_missing")) return "Add an API key first";
  if (isAliasError(error)) return error.data?.reason ?? error.data?.code ?? error.message;
  return String(error);
}

/** `useQuery`: the signed-in user. */
export function Profile() {
  const trpc = useTRPC();
  const me = useQuery(trpc.users.me.queryOptions());
  if (me.isPending) return <p>Loading…</p>;
  if (me.isError) return <p role="alert">{errorText(me.error)}</p>;
  return <p>Signed in as {me.data.name}</p>;
}

/** `useInfiniteQuery` over `chat.sessions.list`: tRPC passes `cursor`, the server answers `nextCursor`. */
export function SessionList(props: { pageSize: number }) {
  const trpc = useTRPC();
  const sessions = useInfiniteQuery(
    trpc.chat.sessions.list.infiniteQueryOptions(
      { limit: props.pageSize },
      { getNextPageParam: (page) => page.nextCursor },
    ),
  );
  if (sessions.isPending) return <p>Loading…</p>;
  if (sessions.isError) return <p role="alert">{errorText(sessions.error)}</p>;
  return (
    <section aria-label="sessions">
      <ul>
        {sessions.data.pages.flatMap((page) =>
          page.sessions.map((session) => (
            <li key={session.id} data-id={session.id}>
              {session.title}
            </li>
          )),
        )}
      </ul>
      <p>Pages: {sessions.data.pages.length}</p>
      {sessions.hasNextPage ? (
        <button disabled={sessions.isFetchingNextPage} onClick={() => void sessions.fetchNextPage()}>
          Load more
        </button>
      ) : (
        <p>No more sessions</p>
      )}
    </section>
  );
}

/** `useMutation`: creates a session, then refreshes every `chat.sessions.list` page. */
export function NewSession(props: { title: string }) {
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const create = useMutation(
    trpc.chat.sessions.create.mutationOptions({
      onSuccess: () => queryClient.invalidateQueries(trpc.chat.sessions.list.pathFilter()),
    }),
  );
  return (
    <div>
      <button disabled={create.isPending} onClick={() => create.mutate({ title: props.title })}>
        New session
      </button>
      {create.isSuccess ? <p>Created {create.data.title}</p> : null}
      {create.isError ? <p role="alert">{errorText(create.error)}</p> : null}
    </div>
  );
}

/**
 * `useInfiniteQuery` over `chat.messages.list`: the first page is the newest messages, each next
 * page older ones (`direction: "forward"`), each page oldest first; so the conversation reads
 * the pages in reverse.
 */
export function MessageList(props: { sessionId: string; pageSize: number }) {
  const trpc = useTRPC();
  const messages = useInfiniteQuery(
    trpc.chat.messages.list.infiniteQueryOptions(
      { sessionId: props.sessionId, limit: props.pageSize },
      { getNextPageParam: (page) => page.nextCursor },
    ),
  );
  if (messages.isPending) return <p>Loading…</p>;
  if (messages.isError) return <p role="alert">{errorText(messages.error)}</p>;
  const conversation = [...messages.data.pages].reverse().flatMap((page) => page.messages);
  return (
    <section aria-label="messages">
      {messages.hasNextPage ? (
        <button disabled={messages.isFetchingNextPage} onClick={() => void messages.fetchNextPage()}>
          Load older
        </button>
      ) : (
        <p>No older messages</p>
      )}
      <ol>
        {conversation.map((message) => (
          <li key={message.id} data-id={message.id}>
            {message.role}: {message.content}
          </li>
        ))}
      </ol>
      <p>Pages: {messages.data.pages.length}</p>
    </section>
  );
}

/**
 * Sending a message: `chat.send` (a mutation: the message travels in the body) saves it and
 * starts the reply; `useSubscription` on `chat.follow` streams the reply's events (resuming
 * after the last one if the connection drops) until `done`.
 */
export function ChatReply(props: { sessionId: string; content: string; provider?: "gemini" | "openai" }) {
  const trpc = useTRPC();
  const send = useMutation(trpc.chat.send.mutationOptions());
  const [text, setText] = useState("");
  const [saved, setSaved] = useState<Message | null>(null);
  const replyMessageId = send.data?.replyMessageId;
  const reply = useSubscription(
    trpc.chat.follow.subscriptionOptions(replyMessageId ? { messageId: replyMessageId } : skipToken, {
      onData: ({ data: event }) => {
        if (event.type === "delta") setText((sofar) => sofar + event.text);
        if (event.type === "done") setSaved(event.message);
      },
    }),
  );
  const start = () =>
    send.mutate({
      sessionId: props.sessionId,
      content: props.content,
      // A new id per message; a retry of this mutation resends the same one, which the server
      // answers with the first attempt's reply. (On React Native: expo-crypto's randomUUID.)
      clientMessageId: crypto.randomUUID(),
      provider: props.provider ?? null,
    });
  return (
    <section aria-label="chat">
      <button disabled={send.isPending || (replyMessageId !== undefined && saved === null)} onClick={start}>
        Send
      </button>
      {send.isError ? <p role="alert">{errorText(send.error)}</p> : null}
      {reply.error ? <p role="alert">{errorText(reply.error)}</p> : null}
      <p aria-label="reply">{text}</p>
      {saved ? <p>Reply {saved.status}</p> : null}
    </section>
  );
}
