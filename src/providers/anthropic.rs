//! Anthropic's Messages API.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::sse::{Decoder, SseEvent};
use super::types::{
    AiProvider, ChatProvider, ChatRequest, Completion, EventStream, FilePart, ProviderError,
    StreamEvent, ToolCallRequest, ToolSpec, Turn, Upstream,
};
use super::wire;

pub struct Anthropic;

const PATH: &str = "/v1/messages";

#[async_trait::async_trait]
impl ChatProvider for Anthropic {
    async fn stream(
        &self,
        upstream: &Upstream<'_>,
        request: &ChatRequest,
    ) -> Result<EventStream, ProviderError> {
        let response = wire::post(self, upstream, PATH, &body(request, true)).await?;
        Ok(wire::sse_events(
            upstream,
            response,
            StreamDecoder::default(),
        ))
    }

    async fn complete(
        &self,
        upstream: &Upstream<'_>,
        request: &ChatRequest,
    ) -> Result<Completion, ProviderError> {
        let reply: Reply = wire::post_for(self, upstream, PATH, &body(request, false)).await?;
        reply_text(reply)
    }

    /// Anthropic's 529 overloaded is the same condition as its `overloaded_error` event.
    fn is_overloaded(&self, body: &Value) -> bool {
        is_overloaded(body)
    }
}

fn body(request: &ChatRequest, stream: bool) -> Value {
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens,
        // Anthropic accepts 0..=1 where the others take 0..=2.
        "temperature": request.temperature.clamp(0.0, 1.0),
        "messages": messages(&request.turns),
        "stream": stream,
    });
    if !request.system.is_empty() {
        body["system"] = json!(request.system);
    }
    if !request.tools.is_empty() {
        body["tools"] = request.tools.iter().map(tool).collect();
    }
    body
}

fn messages(turns: &[Turn]) -> Vec<Value> {
    wire::merge_roles(turns.iter().map(message))
        .into_iter()
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect()
}

fn message(turn: &Turn) -> (&'static str, Vec<Value>) {
    match turn {
        Turn::User(text) => ("user", vec![json!({ "type": "text", "text": text })]),
        Turn::Files(files) => ("user", files.iter().map(file_block).collect()),
        Turn::Assistant { text, tool_calls } => {
            // Anthropic refuses empty text blocks.
            let text = (!text.is_empty()).then(|| json!({ "type": "text", "text": text }));
            let calls = tool_calls.iter().map(|call| {
                json!({ "type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments })
            });
            ("assistant", text.into_iter().chain(calls).collect())
        }
        Turn::ToolResult {
            call_id, result, ..
        } => {
            let block = json!({
                "type": "tool_result",
                "tool_use_id": call_id,
                "content": wire::result_text(result),
            });
            ("user", vec![block])
        }
    }
}

/// An `image` block, or a `document` block for a PDF, with the bytes inline (base64).
fn file_block(file: &FilePart) -> Value {
    let kind = if file.is_pdf() { "document" } else { "image" };
    json!({
        "type": kind,
        "source": { "type": "base64", "media_type": file.mime_type, "data": file.base64() },
    })
}

fn tool(tool: &ToolSpec) -> Value {
    json!({
        "name": tool.name,
        "description": tool.description,
        "input_schema": tool.parameters,
    })
}

/// Whether an error body says Anthropic is overloaded (its 529), whatever the status.
fn is_overloaded(body: &Value) -> bool {
    body["error"]["type"].as_str() == Some("overloaded_error")
}

/// The streamed events; any other type is an error (as asked of every provider here).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        message: MessageStart,
    },
    ContentBlockStart {
        index: usize,
        content_block: BlockStart,
    },
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: MessageDelta,
        usage: Option<Usage>,
    },
    MessageStop,
    Ping,
    Error {
        error: ApiError,
    },
}

#[derive(Deserialize)]
struct MessageStart {
    usage: Option<Usage>,
}

/// Counts so far: `message_delta` repeats them, larger.
#[derive(Deserialize)]
struct Usage {
    input_tokens: Option<u32>,
    output_tokens: Option<u32>,
}

/// Blocks other than text and tool calls (thinking, server tools) are not part of the answer.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockStart {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageDelta {
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(rename = "type")]
    kind: String,
    message: Option<String>,
}

impl ApiError {
    fn into_provider_error(self) -> ProviderError {
        match self.kind.as_str() {
            "overloaded_error" => return wire::overloaded(),
            "rate_limit_error" => return wire::rate_limited(),
            _ => {}
        }
        wire::reported_error(AiProvider::Anthropic, self.message.as_deref())
    }
}

/// A tool call whose input JSON is still arriving.
struct PartialToolUse {
    id: String,
    name: String,
    json: String,
}

/// Text deltas stream as they come; a tool call is complete at its block's stop. Usage and
/// the stop reason are known by `message_stop`, the end marker.
#[derive(Default)]
struct StreamDecoder {
    tool_uses: HashMap<usize, PartialToolUse>,
    input_tokens: Option<u32>,
    output_tokens: Option<u32>,
    stop_reason: Option<String>,
}

impl Decoder for StreamDecoder {
    fn event(&mut self, event: SseEvent) -> Result<Vec<StreamEvent>, ProviderError> {
        let event: Event = serde_json::from_str(&event.data)
            .map_err(|error| wire::malformed_event(AiProvider::Anthropic, &error))?;
        match event {
            Event::MessageStart { message } => self.count(message.usage),
            Event::ContentBlockStart {
                index,
                content_block,
            } => return Ok(self.start_block(index, content_block)),
            Event::ContentBlockDelta { index, delta } => return self.delta(index, delta),
            Event::ContentBlockStop { index } => return self.stop_block(index),
            Event::MessageDelta { delta, usage } => {
                self.stop_reason = delta.stop_reason.or(self.stop_reason.take());
                self.count(usage);
            }
            Event::MessageStop => return Ok(self.finish()),
            Event::Ping => {}
            Event::Error { error } => return Err(error.into_provider_error()),
        }
        Ok(Vec::new())
    }

    fn end(&mut self) -> Result<Vec<StreamEvent>, ProviderError> {
        Err(ProviderError::Upstream(
            "Anthropic ended the reply before finishing it".to_owned(),
        ))
    }
}

impl StreamDecoder {
    fn count(&mut self, usage: Option<Usage>) {
        let Some(usage) = usage else {
            return;
        };
        self.input_tokens = usage.input_tokens.or(self.input_tokens);
        self.output_tokens = usage.output_tokens.or(self.output_tokens);
    }

    fn start_block(&mut self, index: usize, block: BlockStart) -> Vec<StreamEvent> {
        match block {
            BlockStart::Text { text } if !text.is_empty() => vec![StreamEvent::Text(text)],
            BlockStart::ToolUse { id, name } => {
                let json = String::new();
                self.tool_uses
                    .insert(index, PartialToolUse { id, name, json });
                Vec::new()
            }
            BlockStart::Text { .. } | BlockStart::Other => Vec::new(),
        }
    }

    fn delta(
        &mut self,
        index: usize,
        delta: BlockDelta,
    ) -> Result<Vec<StreamEvent>, ProviderError> {
        match delta {
            BlockDelta::TextDelta { text } if !text.is_empty() => Ok(vec![StreamEvent::Text(text)]),
            BlockDelta::InputJsonDelta { partial_json } => {
                let tool_use = self.tool_uses.get_mut(&index).ok_or_else(|| {
                    ProviderError::Upstream("Anthropic sent input for no tool call".to_owned())
                })?;
                tool_use.json.push_str(&partial_json);
                Ok(Vec::new())
            }
            BlockDelta::TextDelta { .. } | BlockDelta::Other => Ok(Vec::new()),
        }
    }

    fn stop_block(&mut self, index: usize) -> Result<Vec<StreamEvent>, ProviderError> {
        let Some(tool_use) = self.tool_uses.remove(&index) else {
            return Ok(Vec::new());
        };
        // A tool without arguments gets no input deltas at all.
        let arguments = if tool_use.json.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&tool_use.json).map_err(|error| {
                ProviderError::Upstream(format!("Anthropic sent malformed tool input ({error})"))
            })?
        };
        Ok(vec![StreamEvent::ToolCall(ToolCallRequest {
            id: tool_use.id,
            name: tool_use.name,
            arguments,
            signature: None,
        })])
    }

    fn finish(&mut self) -> Vec<StreamEvent> {
        let usage = match (self.input_tokens, self.output_tokens) {
            (None, None) => None,
            (input, output) => Some(StreamEvent::Usage {
                input_tokens: input.unwrap_or(0),
                output_tokens: output.unwrap_or(0),
            }),
        };
        let finished = StreamEvent::Finished {
            reason: self.stop_reason.take(),
        };
        usage.into_iter().chain([finished]).collect()
    }
}

/// A whole message.
#[derive(Deserialize)]
struct Reply {
    content: Vec<ReplyBlock>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct ReplyBlock {
    text: Option<String>,
}

/// Only text blocks have `text`, so the rest fall away.
fn reply_text(reply: Reply) -> Result<Completion, ProviderError> {
    let usage = reply.usage.as_ref().map(|usage| {
        let count = |tokens: Option<u32>| tokens.unwrap_or(0);
        (count(usage.input_tokens), count(usage.output_tokens))
    });
    let text = reply
        .content
        .into_iter()
        .filter_map(|block| block.text)
        .collect();
    wire::non_empty_reply(AiProvider::Anthropic, text, usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::sse::testing::decode_all;

    fn call(id: &str, name: &str, arguments: Value) -> ToolCallRequest {
        ToolCallRequest {
            id: id.to_owned(),
            name: name.to_owned(),
            arguments,
            signature: None,
        }
    }

    #[test]
    fn a_conversation_with_tool_calls_becomes_messages() {
        let request = ChatRequest {
            model: "claude-sonnet-4-5".to_owned(),
            system: "Be brief.".to_owned(),
            turns: vec![
                Turn::User("Time and weather?".to_owned()),
                Turn::Assistant {
                    text: "Checking.".to_owned(),
                    tool_calls: vec![
                        call("toolu_1", "get_current_time", json!({})),
                        call("toolu_2", "get_weather", json!({ "city": "Paris" })),
                    ],
                },
                Turn::ToolResult {
                    call_id: "toolu_1".to_owned(),
                    name: "get_current_time".to_owned(),
                    result: json!("12:00"),
                },
                Turn::ToolResult {
                    call_id: "toolu_2".to_owned(),
                    name: "get_weather".to_owned(),
                    result: json!({ "sky": "clear" }),
                },
            ],
            temperature: 1.0,
            max_tokens: 2048,
            tools: vec![ToolSpec {
                name: "get_weather",
                description: "The weather in a city.",
                parameters: json!({ "type": "object", "properties": { "city": { "type": "string" } } }),
            }],
        };
        assert_eq!(
            body(&request, true),
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 2048,
                "temperature": 1.0,
                "system": "Be brief.",
                "stream": true,
                "messages": [
                    { "role": "user", "content": [{ "type": "text", "text": "Time and weather?" }] },
                    { "role": "assistant", "content": [
                        { "type": "text", "text": "Checking." },
                        { "type": "tool_use", "id": "toolu_1", "name": "get_current_time", "input": {} },
                        { "type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": { "city": "Paris" } },
                    ] },
                    { "role": "user", "content": [
                        { "type": "tool_result", "tool_use_id": "toolu_1", "content": "12:00" },
                        { "type": "tool_result", "tool_use_id": "toolu_2", "content": "{\"sky\":\"clear\"}" },
                    ] },
                ],
                "tools": [{
                    "name": "get_weather",
                    "description": "The weather in a city.",
                    "input_schema": { "type": "object", "properties": { "city": { "type": "string" } } },
                }],
            })
        );
        let mut plain = request.clone();
        plain.system.clear();
        plain.tools.clear();
        let body = body(&plain, false);
        assert_eq!(body["stream"], json!(false));
        assert!(body.get("system").is_none() && body.get("tools").is_none());
    }

    /// As the Messages API streams it, with a ping, a thinking block and a tool call.
    const TOOL_USE_REPLY: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5-20250929","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":2}}}

event: ping
data: {"type": "ping"}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"The user wants the weather."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Okay, let me check "}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Caf\u00e9 ☕."}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"San Fra"}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"ncisco\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"#;

    #[tokio::test]
    async fn a_streamed_reply_with_a_tool_call_decodes() {
        assert_eq!(
            decode_all(TOOL_USE_REPLY, StreamDecoder::default).await,
            vec![
                Ok(StreamEvent::Text("Okay, let me check ".to_owned())),
                Ok(StreamEvent::Text("Caf\u{e9} \u{2615}.".to_owned())),
                Ok(StreamEvent::ToolCall(call(
                    "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "get_weather",
                    json!({ "city": "San Francisco" })
                ))),
                Ok(StreamEvent::Usage {
                    input_tokens: 472,
                    output_tokens: 89,
                }),
                Ok(StreamEvent::Finished {
                    reason: Some("tool_use".to_owned()),
                }),
            ]
        );
    }

    #[tokio::test]
    async fn a_tool_without_input_deltas_gets_empty_arguments() {
        let reply = "event: content_block_start\r\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"get_current_time\",\"input\":{}}}\r\n\r\n\
                     event: content_block_stop\r\ndata: {\"type\":\"content_block_stop\",\"index\":0}\r\n\r\n\
                     event: message_delta\r\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":12}}\r\n\r\n\
                     event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n";
        assert_eq!(
            decode_all(reply, StreamDecoder::default).await,
            vec![
                Ok(StreamEvent::ToolCall(call(
                    "toolu_2",
                    "get_current_time",
                    json!({})
                ))),
                Ok(StreamEvent::Usage {
                    input_tokens: 0,
                    output_tokens: 12
                }),
                Ok(StreamEvent::Finished {
                    reason: Some("tool_use".to_owned())
                }),
            ]
        );
    }

    #[tokio::test]
    async fn errors_unknown_events_and_cut_streams_fail() {
        let start = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"Hi\"}}\n\n";
        for (tail, expected) in [
            ("", "Anthropic ended the reply before finishing it"),
            (
                "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal server error\"}}\n\n",
                "Anthropic reported an error: Internal server error",
            ),
            (
                "event: surprise\ndata: {\"type\":\"surprise\"}\n\n",
                "Anthropic sent a malformed event",
            ),
            (
                "event: ping\ndata: {\n\n",
                "Anthropic sent a malformed event",
            ),
            (
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":5,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n",
                "Anthropic sent input for no tool call",
            ),
        ] {
            let events = decode_all(&format!("{start}{tail}"), StreamDecoder::default).await;
            assert_eq!(
                events.first(),
                Some(&Ok(StreamEvent::Text("Hi".to_owned())))
            );
            assert!(
                matches!(&events[1..], [Err(ProviderError::Upstream(message))] if message.starts_with(expected)),
                "{tail}: {events:?}"
            );
        }
        let overloaded = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        assert_eq!(
            decode_all(overloaded, StreamDecoder::default).await,
            vec![Err(ProviderError::Overloaded {
                retry_after_seconds: 30
            })]
        );
    }

    #[test]
    fn overload_bodies_are_recognised() {
        let body =
            |kind: &str| json!({ "type": "error", "error": { "type": kind, "message": "x" } });
        assert!(is_overloaded(&body("overloaded_error")));
        assert!(!is_overloaded(&body("rate_limit_error")));
        assert!(!is_overloaded(&body("invalid_request_error")));
    }

    #[test]
    fn a_whole_reply_is_its_text_blocks_with_its_usage() {
        let reply: Reply = serde_json::from_value(json!({
            "id": "msg_02",
            "type": "message",
            "role": "assistant",
            "content": [
                { "type": "thinking", "thinking": "…", "signature": "s" },
                { "type": "text", "text": "Paris trip" },
            ],
            "stop_reason": "end_turn",
            "usage": { "input_tokens": 52, "output_tokens": 7 },
        }))
        .expect("a reply");
        let completion = Completion {
            text: "Paris trip".to_owned(),
            usage: Some((52, 7)),
        };
        assert_eq!(reply_text(reply), Ok(completion));
    }
}
