// tRPC's React Query integration over the same client, as tRPC's docs write it.
import {
  QueryClient,
  skipToken,
  useInfiniteQuery,
  useMutation,
  useQuery,
} from "@tanstack/react-query";
import {
  createTRPCContext,
  createTRPCOptionsProxy,
  useSubscription,
} from "@trpc/tanstack-react-query";
import type { AppRouter } from "alias-server";
import { AI_PROVIDERS, type ChatEvent, type Message } from "alias-server/bindings";
import { api } from "./api";

export const { TRPCProvider, useTRPC } = createTRPCContext<AppRouter>();

export const queryClient = new QueryClient();
export const trpc = createTRPCOptionsProxy<AppRouter>({ client: api, queryClient });

/** A runtime value list, for a picker. */
export const providers: readonly ("gemini" | "openai" | "anthropic")[] = AI_PROVIDERS;

export function useSessions() {
  const trpc = useTRPC();
  const me = useQuery(trpc.users.me.queryOptions());
  const sessions = useInfiniteQuery(
    trpc.chat.sessions.list.infiniteQueryOptions(
      { limit: 20 },
      { getNextPageParam: (page) => page.nextCursor },
    ),
  );
  const create = useMutation(trpc.chat.sessions.create.mutationOptions());

  const name: string | undefined = me.data?.name;
  const titles: string[] = sessions.data?.pages.flatMap((page) => page.sessions.map((s) => s.title)) ?? [];
  // @ts-expect-error: pages hold SessionPage, not sessions
  const wrong: string[] = sessions.data?.pages.map((page) => page.title) ?? [];
  const start = () => create.mutate({});
  return { name, titles, wrong, start };
}

export function useConversation(sessionId: string) {
  const trpc = useTRPC();
  const messages = useInfiniteQuery(
    trpc.chat.messages.list.infiniteQueryOptions(
      { sessionId, limit: 50 },
      { getNextPageParam: (page) => page.nextCursor },
    ),
  );
  const older: Message[] = messages.data?.pages.flatMap((page) => page.messages) ?? [];

  const send = useMutation(trpc.chat.send.mutationOptions());
  const replyMessageId: string | undefined = send.data?.replyMessageId;
  const reply = useSubscription(
    trpc.chat.follow.subscriptionOptions(replyMessageId ? { messageId: replyMessageId } : skipToken, {
      onData: ({ id, data }) => {
        const eventId: string = id;
        const event: ChatEvent = data;
        if (event.type === "delta") console.log(eventId, event.text);
        // @ts-expect-error: a delta has text, not content
        if (event.type === "delta") console.log(event.content);
      },
    }),
  );
  const say = (content: string) =>
    send.mutate({ sessionId, content, clientMessageId: "00000000-0000-4000-8000-000000000000" });
  return { older, say, status: reply.status };
}
