// tRPC's React Query integration (`@trpc/tanstack-react-query`) over createAliasClient, written
// as tRPC's docs write it. ts/test/react.test.tsx renders these components against the real
// server, so the patterns cannot regress. The hooks are the app's; the elements are DOM ones
// here (the app renders <View>/<Text>/<FlatList> with the same data).
import {
  QueryClient,
  QueryClientProvider,
  useInfiniteQuery,
  useMutation,
  useQuery,
  useQueryClient,
} from "@tanstack/react-query";
import { createTRPCContext } from "@trpc/tanstack-react-query";
import type { ReactNode } from "react";
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
