//! Server-sent events as the providers send them (WHATWG event-stream rules), and the driver
//! that turns a response body into `StreamEvent`s through a provider's `Decoder`.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use super::types::{EventStream, ProviderError, StreamEvent};

/// An event line longer than this is a broken or hostile upstream, not a reply.
const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// One dispatched event; `event` is empty when the server named none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Bytes in, events out. Keeps whatever a chunk ends in the middle of until the next chunk.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    event: String,
    data: Vec<String>,
    started: bool,
}

impl SseParser {
    /// The events completed by `chunk`.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, ProviderError> {
        self.buffer.extend_from_slice(chunk);
        let events = self.drain_lines(false);
        if self.buffer.len() > MAX_LINE_BYTES {
            return Err(ProviderError::Upstream(
                "the provider sent an oversized event".to_owned(),
            ));
        }
        Ok(events)
    }

    /// The body ended. An event missing only its closing blank line still counts: some
    /// servers end the stream right after the last `data:` line.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut events = self.drain_lines(true);
        if !self.buffer.is_empty() {
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.buffer)).into_owned();
            events.extend(self.line(&line));
        }
        events.extend(self.dispatch());
        events
    }

    fn drain_lines(&mut self, at_end: bool) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(line) = self.next_line(at_end) {
            events.extend(self.line(&line));
        }
        events
    }

    /// The next complete line: ended by `\r\n`, `\n` or `\r`.
    fn next_line(&mut self, at_end: bool) -> Option<String> {
        let end = self
            .buffer
            .iter()
            .position(|byte| matches!(byte, b'\n' | b'\r'))?;
        let terminator = match (self.buffer[end], self.buffer.get(end + 1)) {
            (b'\r', Some(b'\n')) => 2,
            // A `\r` ending the chunk may be the first half of a `\r\n` split across chunks.
            (b'\r', None) if !at_end => return None,
            _ => 1,
        };
        // Lines end at ASCII bytes, so a complete line never splits a UTF-8 character.
        let mut line = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
        self.buffer.drain(..end + terminator);
        if !self.started {
            self.started = true;
            if let Some(rest) = line.strip_prefix('\u{feff}') {
                line = rest.to_owned();
            }
        }
        Some(line)
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => self.data.push(value.to_owned()),
            // `id` and `retry` serve browser reconnection, which a reply stream never uses.
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.event);
        if self.data.is_empty() {
            return None;
        }
        let data = std::mem::take(&mut self.data).join("\n");
        Some(SseEvent { event, data })
    }
}

/// What one provider makes of its events.
pub trait Decoder: Send + 'static {
    /// The stream events one SSE event means; a `Finished` among them ends the stream.
    fn event(&mut self, event: SseEvent) -> Result<Vec<StreamEvent>, ProviderError>;

    /// The body ended: the closing events (ending in `Finished`), or an error when the reply
    /// was cut short.
    fn end(&mut self) -> Result<Vec<StreamEvent>, ProviderError>;
}

/// Decodes a response body. Waiting more than `idle_timeout` for the next chunk (any bytes,
/// keep-alive comments included, prove the upstream alive) fails with `Timeout`. The stream
/// ends after the first `Finished` or error.
pub fn decode<B, D>(body: B, decoder: D, idle_timeout: Duration) -> EventStream
where
    B: Stream<Item = Result<Bytes, ProviderError>> + Send + 'static,
    D: Decoder,
{
    let driver = Driver {
        body: body.boxed(),
        parser: SseParser::default(),
        decoder,
        idle_timeout,
        ready: VecDeque::new(),
        done: false,
    };
    futures::stream::unfold(driver, |mut driver| async move {
        let item = driver.next().await?;
        Some((item, driver))
    })
    .boxed()
}

struct Driver<D> {
    body: BoxStream<'static, Result<Bytes, ProviderError>>,
    parser: SseParser,
    decoder: D,
    idle_timeout: Duration,
    ready: VecDeque<Result<StreamEvent, ProviderError>>,
    /// The body is over, or a final item is out: nothing more is read.
    done: bool,
}

impl<D: Decoder> Driver<D> {
    async fn next(&mut self) -> Option<Result<StreamEvent, ProviderError>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                if matches!(item, Ok(StreamEvent::Finished { .. }) | Err(_)) {
                    self.done = true;
                    self.ready.clear();
                }
                return Some(item);
            }
            if self.done {
                return None;
            }
            self.pull().await;
        }
    }

    async fn pull(&mut self) {
        match tokio::time::timeout(self.idle_timeout, self.body.next()).await {
            Err(_) => self.ready.push_back(Err(ProviderError::Timeout)),
            Ok(Some(Err(error))) => self.ready.push_back(Err(error)),
            Ok(Some(Ok(chunk))) => match self.parser.feed(&chunk) {
                Ok(events) => self.decode(events),
                Err(error) => self.ready.push_back(Err(error)),
            },
            Ok(None) => {
                self.done = true;
                let events = self.parser.finish();
                self.decode(events);
                let closing = self.decoder.end();
                self.push(closing);
            }
        }
    }

    fn decode(&mut self, events: Vec<SseEvent>) {
        for event in events {
            let decoded = self.decoder.event(event);
            let failed = decoded.is_err();
            self.push(decoded);
            if failed {
                return;
            }
        }
    }

    fn push(&mut self, decoded: Result<Vec<StreamEvent>, ProviderError>) {
        match decoded {
            Ok(events) => self.ready.extend(events.into_iter().map(Ok)),
            Err(error) => self.ready.push_back(Err(error)),
        }
    }
}

#[cfg(test)]
pub mod testing {
    //! Feeding recorded provider output through a decoder, cut into chunks of every size.

    use futures::StreamExt;

    use super::*;

    /// Everything the decoder makes of `text` cut into `chunk_size`-byte chunks (which split
    /// lines, `\r\n` pairs and UTF-8 characters).
    pub async fn decode_in_chunks<D: Decoder>(
        text: &str,
        chunk_size: usize,
        decoder: D,
    ) -> Vec<Result<StreamEvent, ProviderError>> {
        let chunks: Vec<Result<Bytes, ProviderError>> = text
            .as_bytes()
            .chunks(chunk_size)
            .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
            .collect();
        decode(
            futures::stream::iter(chunks),
            decoder,
            Duration::from_secs(5),
        )
        .collect()
        .await
    }

    /// What the decoder makes of `text`, checked to be the same however the text is chunked.
    pub async fn decode_all<D: Decoder>(
        text: &str,
        decoder: impl Fn() -> D,
    ) -> Vec<Result<StreamEvent, ProviderError>> {
        let whole = decode_in_chunks(text, text.len().max(1), decoder()).await;
        for chunk_size in 1..=17 {
            let chunked = decode_in_chunks(text, chunk_size, decoder()).await;
            assert_eq!(chunked, whole, "chunks of {chunk_size} bytes");
        }
        whole
    }

    /// The text of every `Text` event, joined.
    pub fn text_of(events: &[Result<StreamEvent, ProviderError>]) -> String {
        events
            .iter()
            .filter_map(|event| match event {
                Ok(StreamEvent::Text(text)) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::decode_in_chunks;
    use super::*;

    fn parse_in_chunks(text: &str, chunk_size: usize) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for chunk in text.as_bytes().chunks(chunk_size) {
            events.extend(parser.feed(chunk).expect("small events"));
        }
        events.extend(parser.finish());
        events
    }

    fn event(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn events_survive_any_chunking_and_line_ending() {
        let text = "\u{feff}: a comment\r\nevent: first\r\ndata: caf\u{e9} \u{2615}\r\n\r\n\
                    data:line one\ndata: line two\nid: 7\nretry: 100\n\n\
                    data\rdata: after a bare CR\r\r\
                    event: no-data\n\n";
        let expected = vec![
            event("first", "caf\u{e9} \u{2615}"),
            event("", "line one\nline two"),
            event("", "\nafter a bare CR"),
        ];
        for chunk_size in 1..=text.len() {
            assert_eq!(parse_in_chunks(text, chunk_size), expected, "{chunk_size}");
        }
    }

    #[test]
    fn a_last_event_without_its_blank_line_still_counts() {
        assert_eq!(
            parse_in_chunks("data: {\"a\":1}\n\ndata: [DONE]", 4),
            vec![event("", "{\"a\":1}"), event("", "[DONE]")]
        );
        assert_eq!(parse_in_chunks("data: x\r", 3), vec![event("", "x")]);
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut parser = SseParser::default();
        let chunk = vec![b'a'; MAX_LINE_BYTES + 1];
        assert!(matches!(
            parser.feed(&chunk),
            Err(ProviderError::Upstream(_))
        ));
    }

    /// Echoes each event's data as text; finishes on `stop`, fails on `fail`.
    struct Echo;

    impl Decoder for Echo {
        fn event(&mut self, event: SseEvent) -> Result<Vec<StreamEvent>, ProviderError> {
            match event.data.as_str() {
                "stop" => Ok(vec![StreamEvent::Finished { reason: None }]),
                "fail" => Err(ProviderError::Upstream("fail".to_owned())),
                text => Ok(vec![StreamEvent::Text(text.to_owned())]),
            }
        }

        fn end(&mut self) -> Result<Vec<StreamEvent>, ProviderError> {
            Err(ProviderError::Upstream("cut short".to_owned()))
        }
    }

    fn text(text: &str) -> Result<StreamEvent, ProviderError> {
        Ok(StreamEvent::Text(text.to_owned()))
    }

    #[tokio::test]
    async fn the_stream_ends_at_finished_or_the_first_error() {
        assert_eq!(
            decode_in_chunks("data: a\n\ndata: stop\n\ndata: b\n\n", 100, Echo).await,
            vec![text("a"), Ok(StreamEvent::Finished { reason: None })]
        );
        assert_eq!(
            decode_in_chunks("data: a\n\ndata: fail\n\ndata: b\n\n", 100, Echo).await,
            vec![text("a"), Err(ProviderError::Upstream("fail".to_owned()))]
        );
        assert_eq!(
            decode_in_chunks("data: a\n\n", 3, Echo).await,
            vec![
                text("a"),
                Err(ProviderError::Upstream("cut short".to_owned()))
            ]
        );
    }

    #[tokio::test]
    async fn transport_errors_end_the_stream() {
        let body = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"data: a\n\n")),
            Err(ProviderError::Upstream("connection reset".to_owned())),
            Ok(Bytes::from_static(b"data: b\n\n")),
        ]);
        let events: Vec<_> = decode(body, Echo, Duration::from_secs(5)).collect().await;
        assert_eq!(
            events,
            vec![
                text("a"),
                Err(ProviderError::Upstream("connection reset".to_owned()))
            ]
        );
    }

    #[tokio::test]
    async fn a_quiet_upstream_times_out() {
        let body = futures::stream::iter(vec![Ok(Bytes::from_static(b"data: a\n\n"))])
            .chain(futures::stream::pending());
        let events: Vec<_> = decode(body, Echo, Duration::from_millis(50))
            .collect()
            .await;
        assert_eq!(events, vec![text("a"), Err(ProviderError::Timeout)]);
    }
}
