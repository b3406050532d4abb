// tRPC's React Query integration over the same client, as tRPC's docs write it.
import { QueryClient, useInfiniteQuery, useMutation, useQuery } from "@tanstack/react-query";
import { createTRPCContext, createTRPCOptionsProxy } from "@trpc/tanstack-react-query";
import type { AppRouter } from "alias-server";
import { api } from "./api";

export const { TRPCProvider, useTRPC } = createTRPCContext<AppRouter>();

export const queryClient = new QueryClient();
export const trpc = createTRPCOptionsProxy<AppRouter>({ client: api, queryClient });

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
