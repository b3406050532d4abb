//! OpenAI's Chat Completions API, which local servers (Ollama, vLLM, …) speak as well, less
//! strictly: they may leave out usage, tool call indexes, or the `[DONE]` marker.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::sse::{Decoder, SseEvent};
use super::types::{
    AiProvider, ChatProvider, ChatRequest, Completion, EventStream, FilePart, ProviderError,
    StreamEvent, ToolCallRequest, ToolSpec, Turn, Upstream,
};
use super::wire::{self, CallIds};

pub struct OpenAi;

const PATH: &str = "/v1/chat/completions";

#[async_trait::async_trait]
impl ChatProvider for OpenAi {
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
}

fn body(request: &ChatRequest, stream: bool) -> Value {
    let mut body = json!({
        "model": request.model,
        "messages": messages(request),
        "stream": stream,
        "temperature": request.temperature,
        // `max_tokens` is deprecated and refused by the reasoning models (o-series, gpt-5);
        // its replacement works for every current chat model.
        "max_completion_tokens": request.max_tokens,
    });
    if stream {
        // Without it OpenAI reports no usage for a streamed reply.
        body["stream_options"] = json!({ "include_usage": true });
    }
    if !request.tools.is_empty() {
        // OpenAI refuses an empty `tools` list.
        body["tools"] = request.tools.iter().map(tool).collect();
    }
    body
}

fn messages(request: &ChatRequest) -> Vec<Value> {
    let mut messages: Vec<Value> = (!request.system.is_empty())
        .then(|| json!({ "role": "system", "content": request.system }))
        .into_iter()
        .collect();
    let mut turns = request.turns.iter().peekable();
    while let Some(turn) = turns.next() {
        // A message's files and its text are one user message: text part first, then the
        // files, as OpenAI's examples send them.
        if let Turn::Files(files) = turn {
            let text = match turns.peek() {
                Some(Turn::User(text)) => {
                    turns.next();
                    Some(text)
                }
                _ => None,
            };
            messages.push(user_with_files(text, files));
        } else {
            messages.push(message(turn));
        }
    }
    messages
}

fn user_with_files(text: Option<&String>, files: &[FilePart]) -> Value {
    let text = text
        .filter(|text| !text.is_empty())
        .map(|text| json!({ "type": "text", "text": text }));
    json!({
        "role": "user",
        "content": text.into_iter().chain(files.iter().map(file_part)).collect::<Vec<_>>(),
    })
}

fn message(turn: &Turn) -> Value {
    match turn {
        Turn::User(text) => json!({ "role": "user", "content": text }),
        Turn::Files(files) => user_with_files(None, files),
        Turn::Assistant { text, tool_calls } if tool_calls.is_empty() => {
            json!({ "role": "assistant", "content": text })
        }
        Turn::Assistant { text, tool_calls } => json!({
            "role": "assistant",
            "content": (!text.is_empty()).then_some(text),
            "tool_calls": tool_calls.iter().map(|call| json!({
                "id": call.id,
                "type": "function",
                "function": { "name": call.name, "arguments": call.arguments.to_string() },
            })).collect::<Vec<_>>(),
        }),
        Turn::ToolResult {
            call_id, result, ..
        } => json!({
            "role": "tool",
            "tool_call_id": call_id,
            "content": wire::result_text(result),
        }),
    }
}

/// An `image_url` part with a data URL, or a `file` part (`file_data`) for a PDF.
fn file_part(file: &FilePart) -> Value {
    let data_url = format!("data:{};base64,{}", file.mime_type, file.base64());
    if file.is_pdf() {
        json!({ "type": "file", "file": { "filename": file.filename, "file_data": data_url } })
    } else {
        json!({ "type": "image_url", "image_url": { "url": data_url } })
    }
}

fn tool(tool: &ToolSpec) -> Value {
    json!({
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    })
}

/// A `chat.completion.chunk`. Lists and objects are optional because servers send null or
/// nothing when they are empty.
#[derive(Deserialize)]
struct Chunk {
    choices: Option<Vec<Choice>>,
    usage: Option<Usage>,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct Choice {
    delta: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    index: Option<usize>,
    id: Option<String>,
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct ApiError {
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    /// A string at OpenAI, a number at some compatible servers.
    code: Option<Value>,
}

impl ApiError {
    fn into_provider_error(self) -> ProviderError {
        let rate_limit = "rate_limit_exceeded";
        if self.kind.as_deref() == Some(rate_limit) || self.code == Some(json!(rate_limit)) {
            return wire::rate_limited();
        }
        wire::reported_error(AiProvider::Openai, self.message.as_deref())
    }
}

/// A tool call whose parts are still arriving.
#[derive(Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// Text streams as it comes; tool calls arrive in pieces keyed by `index` and are complete
/// when their choice finishes. Usage follows the finish reason (in a chunk without choices),
/// so `Finished` waits for `[DONE]`.
#[derive(Default)]
struct StreamDecoder {
    calls: BTreeMap<usize, PartialCall>,
    finish_reason: Option<String>,
    usage: Option<StreamEvent>,
    ids: CallIds,
}

impl Decoder for StreamDecoder {
    fn event(&mut self, event: SseEvent) -> Result<Vec<StreamEvent>, ProviderError> {
        if event.data == "[DONE]" {
            return self.finish();
        }
        let chunk: Chunk = serde_json::from_str(&event.data)
            .map_err(|error| wire::malformed_event(AiProvider::Openai, &error))?;
        if let Some(error) = chunk.error {
            return Err(error.into_provider_error());
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(StreamEvent::Usage {
                input_tokens: usage.prompt_tokens.unwrap_or(0),
                output_tokens: usage.completion_tokens.unwrap_or(0),
            });
        }
        let mut events = Vec::new();
        for choice in chunk.choices.into_iter().flatten() {
            events.extend(self.choice(choice)?);
        }
        Ok(events)
    }

    /// A server that closes right after the finish reason, without `[DONE]`, still finished.
    fn end(&mut self) -> Result<Vec<StreamEvent>, ProviderError> {
        if self.finish_reason.is_none() {
            return Err(ProviderError::Upstream(
                "OpenAI ended the reply before finishing it".to_owned(),
            ));
        }
        self.finish()
    }
}

impl StreamDecoder {
    fn choice(&mut self, choice: Choice) -> Result<Vec<StreamEvent>, ProviderError> {
        let mut events = Vec::new();
        if let Some(delta) = choice.delta {
            let text = delta.content.filter(|text| !text.is_empty());
            events.extend(text.map(StreamEvent::Text));
            for call in delta.tool_calls.into_iter().flatten() {
                self.add_to_call(call);
            }
        }
        // Any finish reason completes the calls: some servers say `stop` after tool calls.
        if let Some(reason) = choice.finish_reason.filter(|reason| !reason.is_empty()) {
            events.extend(self.take_calls()?);
            self.finish_reason = Some(reason);
        }
        Ok(events)
    }

    fn add_to_call(&mut self, delta: ToolCallDelta) {
        let index = delta
            .index
            .unwrap_or_else(|| self.unnumbered_index(delta.id.is_some()));
        let call = self.calls.entry(index).or_default();
        if let Some(id) = delta.id.filter(|id| !id.is_empty()) {
            call.id = Some(id);
        }
        let Some(function) = delta.function else {
            return;
        };
        // The name comes whole, and some servers repeat it with every piece.
        if let Some(name) = function.name.filter(|name| !name.is_empty()) {
            call.name = name;
        }
        if let Some(arguments) = function.arguments {
            call.arguments.push_str(&arguments);
        }
    }

    /// Servers that leave out `index` send each call whole, with its id: an id starts a call.
    fn unnumbered_index(&self, starts_call: bool) -> usize {
        match self.calls.keys().next_back() {
            Some(last) if starts_call => last + 1,
            Some(last) => *last,
            None => 0,
        }
    }

    fn take_calls(&mut self) -> Result<Vec<StreamEvent>, ProviderError> {
        std::mem::take(&mut self.calls)
            .into_values()
            .map(|call| self.tool_call(call))
            .collect()
    }

    fn tool_call(&mut self, call: PartialCall) -> Result<StreamEvent, ProviderError> {
        if call.name.is_empty() {
            return Err(ProviderError::Upstream(
                "OpenAI sent a tool call without a name".to_owned(),
            ));
        }
        // A call without arguments may send none at all.
        let arguments = if call.arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&call.arguments).map_err(|error| {
                ProviderError::Upstream(format!("OpenAI sent malformed tool arguments ({error})"))
            })?
        };
        Ok(StreamEvent::ToolCall(ToolCallRequest {
            id: call.id.unwrap_or_else(|| self.ids.next()),
            name: call.name,
            arguments,
            signature: None,
        }))
    }

    fn finish(&mut self) -> Result<Vec<StreamEvent>, ProviderError> {
        let mut events = self.take_calls()?;
        events.extend(self.usage.take());
        events.push(StreamEvent::Finished {
            reason: self.finish_reason.take(),
        });
        Ok(events)
    }
}

/// A whole `chat.completion`.
#[derive(Deserialize)]
struct Reply {
    choices: Option<Vec<ReplyChoice>>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct ReplyChoice {
    message: Option<ReplyMessage>,
}

#[derive(Deserialize)]
struct ReplyMessage {
    content: Option<String>,
}

fn reply_text(reply: Reply) -> Result<Completion, ProviderError> {
    let usage = reply.usage.as_ref().map(|usage| {
        let count = |tokens: Option<u32>| tokens.unwrap_or(0);
        (count(usage.prompt_tokens), count(usage.completion_tokens))
    });
    let text = reply
        .choices
        .into_iter()
        .flatten()
        .next()
        .and_then(|choice| choice.message)
        .and_then(|message| message.content)
        .unwrap_or_default();
    wire::non_empty_reply(AiProvider::Openai, text, usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::sse::testing::{decode_all, text_of};

    fn decoder() -> StreamDecoder {
        StreamDecoder {
            ids: CallIds::new("test"),
            ..StreamDecoder::default()
        }
    }

    fn request() -> ChatRequest {
        ChatRequest {
            model: "gpt-4.1-mini".to_owned(),
            system: "Be brief.".to_owned(),
            turns: vec![
                Turn::User("What time is it?".to_owned()),
                Turn::Assistant {
                    text: String::new(),
                    tool_calls: vec![ToolCallRequest {
                        id: "call_abc".to_owned(),
                        name: "get_current_time".to_owned(),
                        arguments: json!({ "timezone": "Europe/Paris" }),
                        signature: None,
                    }],
                },
                Turn::ToolResult {
                    call_id: "call_abc".to_owned(),
                    name: "get_current_time".to_owned(),
                    result: json!({ "time": "12:00" }),
                },
                Turn::Assistant {
                    text: "Noon.".to_owned(),
                    tool_calls: vec![],
                },
                Turn::User("Thanks".to_owned()),
            ],
            temperature: 0.5,
            max_tokens: 512,
            tools: vec![ToolSpec {
                name: "get_current_time",
                description: "The current time.",
                parameters: json!({ "type": "object", "properties": {} }),
            }],
        }
    }

    #[test]
    fn a_conversation_with_tool_calls_becomes_messages() {
        assert_eq!(
            body(&request(), true),
            json!({
                "model": "gpt-4.1-mini",
                "messages": [
                    { "role": "system", "content": "Be brief." },
                    { "role": "user", "content": "What time is it?" },
                    { "role": "assistant", "content": null, "tool_calls": [{
                        "id": "call_abc",
                        "type": "function",
                        "function": {
                            "name": "get_current_time",
                            "arguments": "{\"timezone\":\"Europe/Paris\"}",
                        },
                    }] },
                    { "role": "tool", "tool_call_id": "call_abc", "content": "{\"time\":\"12:00\"}" },
                    { "role": "assistant", "content": "Noon." },
                    { "role": "user", "content": "Thanks" },
                ],
                "stream": true,
                "stream_options": { "include_usage": true },
                "temperature": 0.5,
                "max_completion_tokens": 512,
                "tools": [{ "type": "function", "function": {
                    "name": "get_current_time",
                    "description": "The current time.",
                    "parameters": { "type": "object", "properties": {} },
                } }],
            })
        );
    }

    #[test]
    fn a_whole_reply_asks_for_no_stream_and_sends_no_empty_lists() {
        let mut request = request();
        request.tools.clear();
        request.system.clear();
        let body = body(&request, false);
        assert_eq!(body["stream"], json!(false));
        assert!(body.get("stream_options").is_none());
        assert!(body.get("tools").is_none());
        assert_eq!(body["messages"][0]["role"], "user");
    }

    /// As OpenAI streams it with `include_usage`: two parallel calls, arguments in pieces.
    const TOOL_CALLS_REPLY: &str = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1747000000,"model":"gpt-4.1-mini-2025-04-14","service_tier":"default","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_time","type":"function","function":{"name":"get_current_time","arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1747000000,"model":"gpt-4.1-mini-2025-04-14","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"timez"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1747000000,"model":"gpt-4.1-mini-2025-04-14","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_weather","type":"function","function":{"name":"get_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1747000000,"model":"gpt-4.1-mini-2025-04-14","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"one\": \"Europe/Paris\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1747000000,"model":"gpt-4.1-mini-2025-04-14","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"city\": \"Caf\u00e9 ☕\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1747000000,"model":"gpt-4.1-mini-2025-04-14","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1747000000,"model":"gpt-4.1-mini-2025-04-14","choices":[],"usage":{"prompt_tokens":81,"completion_tokens":43,"total_tokens":124,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}

data: [DONE]

"#;

    #[tokio::test]
    async fn streamed_tool_calls_are_assembled_from_their_pieces() {
        assert_eq!(
            decode_all(TOOL_CALLS_REPLY, decoder).await,
            vec![
                Ok(StreamEvent::ToolCall(ToolCallRequest {
                    id: "call_time".to_owned(),
                    name: "get_current_time".to_owned(),
                    arguments: json!({ "timezone": "Europe/Paris" }),
                    signature: None,
                })),
                Ok(StreamEvent::ToolCall(ToolCallRequest {
                    id: "call_weather".to_owned(),
                    name: "get_weather".to_owned(),
                    arguments: json!({ "city": "Caf\u{e9} \u{2615}" }),
                    signature: None,
                })),
                Ok(StreamEvent::Usage {
                    input_tokens: 81,
                    output_tokens: 43,
                }),
                Ok(StreamEvent::Finished {
                    reason: Some("tool_calls".to_owned()),
                }),
            ]
        );
    }

    #[tokio::test]
    async fn text_streams_as_it_comes() {
        let reply = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n\
                     data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}],\"usage\":null}\n\n\
                     : keep-alive\n\n\
                     data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there.\"},\"finish_reason\":null}],\"usage\":null}\n\n\
                     data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
                     data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}\n\n\
                     data: [DONE]\n\n";
        let events = decode_all(reply, decoder).await;
        assert_eq!(text_of(&events), "Hello there.");
        assert_eq!(
            events[2..],
            [
                Ok(StreamEvent::Usage {
                    input_tokens: 9,
                    output_tokens: 3
                }),
                Ok(StreamEvent::Finished {
                    reason: Some("stop".to_owned())
                }),
            ]
        );
    }

    /// As Ollama streams it: no usage, a whole tool call without index, `stop` as the reason.
    const OLLAMA_REPLY: &str = r#"data: {"id":"chatcmpl-42","object":"chat.completion.chunk","created":1747000000,"model":"llama3.2","system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":{"role":"assistant","content":"","tool_calls":[{"id":"call_x1","type":"function","function":{"name":"get_current_time","arguments":"{}"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-42","object":"chat.completion.chunk","created":1747000000,"model":"llama3.2","system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":"stop"}]}

data: [DONE]

"#;

    #[tokio::test]
    async fn local_servers_without_usage_or_indexes_work() {
        assert_eq!(
            decode_all(OLLAMA_REPLY, decoder).await,
            vec![
                Ok(StreamEvent::ToolCall(ToolCallRequest {
                    id: "call_x1".to_owned(),
                    name: "get_current_time".to_owned(),
                    arguments: json!({}),
                    signature: None,
                })),
                Ok(StreamEvent::Finished {
                    reason: Some("stop".to_owned())
                }),
            ]
        );
    }

    #[tokio::test]
    async fn a_close_after_the_finish_reason_finishes_and_calls_get_ids() {
        let reply = "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"get_current_time\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n";
        assert_eq!(
            decode_all(reply, decoder).await,
            vec![
                Ok(StreamEvent::ToolCall(ToolCallRequest {
                    id: "test_1".to_owned(),
                    name: "get_current_time".to_owned(),
                    arguments: json!({}),
                    signature: None,
                })),
                Ok(StreamEvent::Finished {
                    reason: Some("tool_calls".to_owned())
                }),
            ]
        );
    }

    #[tokio::test]
    async fn broken_streams_and_error_events_fail() {
        let start = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";
        for (tail, expected) in [
            ("", "OpenAI ended the reply before finishing it"),
            ("data: {\n\n", "OpenAI sent a malformed event"),
            (
                "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n",
                "OpenAI reported an error: The server had an error",
            ),
            (
                "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"{oops\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
                "OpenAI sent malformed tool arguments",
            ),
        ] {
            let events = decode_all(&format!("{start}{tail}"), decoder).await;
            assert_eq!(events.len(), 2, "{tail}");
            assert!(
                matches!(&events[1], Err(ProviderError::Upstream(message)) if message.starts_with(expected)),
                "{tail}: {events:?}"
            );
        }
        let limited = "data: {\"error\":{\"message\":\"Slow down\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}\n\n";
        assert_eq!(
            decode_all(limited, decoder).await,
            vec![Err(ProviderError::RateLimited {
                retry_after_seconds: 30
            })]
        );
    }

    #[test]
    fn a_whole_reply_is_its_message_content_with_its_usage() {
        let reply: Reply = serde_json::from_value(json!({
            "id": "chatcmpl-2",
            "object": "chat.completion",
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": "Paris trip" }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": 52, "completion_tokens": 7, "total_tokens": 59 },
        }))
        .expect("a reply");
        let completion = Completion {
            text: "Paris trip".to_owned(),
            usage: Some((52, 7)),
        };
        assert_eq!(reply_text(reply), Ok(completion));
        let refused: Reply = serde_json::from_value(json!({
            "choices": [{ "message": { "role": "assistant", "content": null, "refusal": "No." } }],
        }))
        .expect("a reply");
        assert!(matches!(
            reply_text(refused),
            Err(ProviderError::Upstream(_))
        ));
    }
}
