//! Google's Gemini API: `generateContent`, streamed as SSE with `alt=sse`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::sse::{Decoder, SseEvent};
use super::types::{
    AiProvider, ChatProvider, ChatRequest, Completion, EventStream, ProviderError, StreamEvent,
    ToolCallRequest, ToolSpec, Turn, Upstream,
};
use super::wire::{self, CallIds};

pub struct Gemini;

#[async_trait::async_trait]
impl ChatProvider for Gemini {
    async fn stream(
        &self,
        upstream: &Upstream<'_>,
        request: &ChatRequest,
    ) -> Result<EventStream, ProviderError> {
        let path = format!(
            "{}:streamGenerateContent?alt=sse",
            model_path(&request.model)
        );
        let response = wire::post(self, upstream, &path, &body(request)).await?;
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
        let path = format!("{}:generateContent", model_path(&request.model));
        let reply: Chunk = wire::post_for(self, upstream, &path, &body(request)).await?;
        reply_text(reply)
    }

    /// Gemini refuses a bad key with 400 INVALID_ARGUMENT rather than 401.
    fn rejects_key(&self, body: &Value) -> bool {
        rejects_key(body)
    }

    /// Gemini sends no Retry-After; its body says how long to wait.
    fn retry_delay(&self, body: &Value) -> Option<u32> {
        retry_delay(body)
    }
}

/// What a model name keeps unescaped: it comes from user preferences and must not be able to
/// change the path.
const MODEL_NAME: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');

/// `/v1beta/models/{model}`, also for a model given in the API's own `models/…` form.
fn model_path(model: &str) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    format!("/v1beta/models/{}", utf8_percent_encode(model, MODEL_NAME))
}

fn body(request: &ChatRequest) -> Value {
    let mut body = json!({
        "contents": contents(&request.turns),
        "generationConfig": {
            "temperature": request.temperature,
            "maxOutputTokens": request.max_tokens,
        },
    });
    if !request.system.is_empty() {
        body["systemInstruction"] = json!({ "parts": [{ "text": request.system }] });
    }
    if !request.tools.is_empty() {
        let declarations: Vec<Value> = request.tools.iter().map(declaration).collect();
        body["tools"] = json!([{ "functionDeclarations": declarations }]);
    }
    body
}

fn contents(turns: &[Turn]) -> Vec<Value> {
    wire::merge_roles(turns.iter().map(content))
        .into_iter()
        .map(|(role, parts)| json!({ "role": role, "parts": parts }))
        .collect()
}

fn content(turn: &Turn) -> (&'static str, Vec<Value>) {
    match turn {
        Turn::User(text) => ("user", vec![json!({ "text": text })]),
        // Images and PDFs alike: `inlineData` parts.
        Turn::Files(files) => (
            "user",
            files
                .iter()
                .map(|file| json!({ "inlineData": { "mimeType": file.mime_type, "data": file.base64() } }))
                .collect(),
        ),
        Turn::Assistant { text, tool_calls } => {
            let text = (!text.is_empty()).then(|| json!({ "text": text }));
            let calls = tool_calls.iter().map(|call| {
                let mut part =
                    json!({ "functionCall": { "name": call.name, "args": call.arguments } });
                if let Some(signature) = &call.signature {
                    part["thoughtSignature"] = json!(signature);
                }
                part
            });
            ("model", text.into_iter().chain(calls).collect())
        }
        Turn::ToolResult { name, result, .. } => {
            // Gemini takes only an object as a function's response.
            let response = if result.is_object() {
                result.clone()
            } else {
                json!({ "result": result })
            };
            let part = json!({ "functionResponse": { "name": name, "response": response } });
            ("user", vec![part])
        }
    }
}

/// Gemini refuses an object schema with no properties ("should be non-empty for OBJECT type"),
/// which is what a tool without arguments has: such a tool goes without `parameters`.
fn declaration(tool: &ToolSpec) -> Value {
    let mut declaration = json!({ "name": tool.name, "description": tool.description });
    let has_properties = tool.parameters["properties"]
        .as_object()
        .is_some_and(|properties| !properties.is_empty());
    if has_properties {
        declaration["parameters"] = tool.parameters.clone();
    }
    declaration
}

/// Whether an error body is Gemini's answer to a bad key (it uses 400, not 401).
fn rejects_key(body: &Value) -> bool {
    let error = &body["error"];
    let mentions_key = error["message"]
        .as_str()
        .is_some_and(|message| message.contains("API key"));
    let key_reason = error["details"]
        .as_array()
        .is_some_and(|details| details.iter().any(|d| d["reason"] == "API_KEY_INVALID"));
    (error["status"] == "INVALID_ARGUMENT" && mentions_key) || key_reason
}

/// Gemini says how long to wait in the body (`RetryInfo.retryDelay`, like `"37s"`), not in
/// a Retry-After header.
fn retry_delay(body: &Value) -> Option<u32> {
    body["error"]["details"]
        .as_array()?
        .iter()
        .find_map(|detail| {
            let seconds: f64 = detail["retryDelay"]
                .as_str()?
                .strip_suffix('s')?
                .parse()
                .ok()?;
            // Saturating float-to-int: a negative or absurd delay cannot wrap.
            Some(seconds.ceil() as u32)
        })
}

/// A `GenerateContentResponse`: each streamed event, and the whole non-streamed reply.
/// Lists are optional because Gemini omits them, and sometimes sends null, when empty.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Chunk {
    candidates: Option<Vec<Candidate>>,
    usage_metadata: Option<UsageMetadata>,
    prompt_feedback: Option<PromptFeedback>,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    content: Option<Content>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Content {
    parts: Option<Vec<Part>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    text: Option<String>,
    /// A thinking model's reasoning summary, not part of the answer.
    thought: Option<bool>,
    function_call: Option<FunctionCall>,
    thought_signature: Option<String>,
}

#[derive(Deserialize)]
struct FunctionCall {
    /// Newer models may number their calls; most send no id.
    id: Option<String>,
    name: String,
    args: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: Option<u32>,
    candidates_token_count: Option<u32>,
    /// Thinking is billed as output.
    thoughts_token_count: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    block_reason: Option<String>,
}

#[derive(Deserialize)]
struct ApiError {
    code: Option<u16>,
    message: Option<String>,
    status: Option<String>,
}

impl ApiError {
    fn into_provider_error(self) -> ProviderError {
        let exhausted = self.status.as_deref() == Some("RESOURCE_EXHAUSTED");
        if self.code == Some(429) || exhausted {
            return wire::rate_limited();
        }
        wire::reported_error(AiProvider::Gemini, self.message.as_deref())
    }
}

impl UsageMetadata {
    /// Input and output tokens.
    fn tokens(&self) -> (u32, u32) {
        let output = self
            .candidates_token_count
            .unwrap_or(0)
            .saturating_add(self.thoughts_token_count.unwrap_or(0));
        (self.prompt_token_count.unwrap_or(0), output)
    }

    fn event(&self) -> StreamEvent {
        let (input_tokens, output_tokens) = self.tokens();
        StreamEvent::Usage {
            input_tokens,
            output_tokens,
        }
    }
}

impl Chunk {
    /// The first candidate: only one is ever asked for.
    fn candidate(self) -> Option<Candidate> {
        self.candidates?.into_iter().next()
    }
}

impl Candidate {
    /// The answer's parts, thoughts left out.
    fn answer_parts(self) -> impl Iterator<Item = Part> {
        self.content
            .and_then(|content| content.parts)
            .into_iter()
            .flatten()
            .filter(|part| part.thought != Some(true))
    }
}

/// Gemini streams whole candidates: each event adds parts, and the last one carries the
/// finish reason. Usage comes with every event, counted so far, so only the last is kept.
#[derive(Default)]
struct StreamDecoder {
    finish_reason: Option<String>,
    usage: Option<StreamEvent>,
    ids: CallIds,
}

impl Decoder for StreamDecoder {
    fn event(&mut self, event: SseEvent) -> Result<Vec<StreamEvent>, ProviderError> {
        let mut chunk: Chunk = serde_json::from_str(&event.data)
            .map_err(|error| wire::malformed_event(AiProvider::Gemini, &error))?;
        if let Some(error) = chunk.error.take() {
            return Err(error.into_provider_error());
        }
        if let Some(usage) = &chunk.usage_metadata {
            self.usage = Some(usage.event());
        }
        // A blocked prompt gets no candidates, only the reason.
        if let Some(reason) = chunk.prompt_feedback.take().and_then(|f| f.block_reason) {
            self.finish_reason = Some(reason);
        }
        let Some(mut candidate) = chunk.candidate() else {
            return Ok(Vec::new());
        };
        if let Some(reason) = candidate.finish_reason.take() {
            self.finish_reason = Some(reason);
        }
        Ok(candidate
            .answer_parts()
            .filter_map(|part| self.part_event(part))
            .collect())
    }

    /// Gemini has no end marker: the body ending after a finish reason is the end.
    fn end(&mut self) -> Result<Vec<StreamEvent>, ProviderError> {
        let reason = self.finish_reason.take().ok_or_else(|| {
            ProviderError::Upstream("Gemini ended the reply before finishing it".to_owned())
        })?;
        let finished = StreamEvent::Finished {
            reason: Some(reason),
        };
        Ok(self.usage.take().into_iter().chain([finished]).collect())
    }
}

impl StreamDecoder {
    fn part_event(&mut self, part: Part) -> Option<StreamEvent> {
        if let Some(call) = part.function_call {
            return Some(StreamEvent::ToolCall(ToolCallRequest {
                id: call.id.unwrap_or_else(|| self.ids.next()),
                name: call.name,
                arguments: call.args.unwrap_or_else(|| json!({})),
                signature: part.thought_signature,
            }));
        }
        part.text
            .filter(|text| !text.is_empty())
            .map(StreamEvent::Text)
    }
}

fn reply_text(mut reply: Chunk) -> Result<Completion, ProviderError> {
    if let Some(error) = reply.error.take() {
        return Err(error.into_provider_error());
    }
    let usage = reply.usage_metadata.as_ref().map(UsageMetadata::tokens);
    let text: String = reply
        .candidate()
        .into_iter()
        .flat_map(Candidate::answer_parts)
        .filter_map(|part| part.text)
        .collect();
    wire::non_empty_reply(AiProvider::Gemini, text, usage)
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

    fn request(turns: Vec<Turn>, tools: Vec<ToolSpec>) -> ChatRequest {
        ChatRequest {
            model: "gemini-2.5-flash".to_owned(),
            system: "Be brief.".to_owned(),
            turns,
            temperature: 0.7,
            max_tokens: 1024,
            tools,
        }
    }

    fn time_tool() -> ToolSpec {
        ToolSpec {
            name: "get_current_time",
            description: "The current time.",
            parameters: json!({ "type": "object", "properties": {} }),
        }
    }

    fn weather_tool() -> ToolSpec {
        ToolSpec {
            name: "get_weather",
            description: "The weather in a city.",
            parameters: json!({
                "type": "object",
                "properties": { "city": { "type": "string" } },
                "required": ["city"],
            }),
        }
    }

    #[test]
    fn a_conversation_with_tool_calls_becomes_contents() {
        let turns = vec![
            Turn::User("Time and weather in Paris?".to_owned()),
            Turn::Assistant {
                text: String::new(),
                tool_calls: vec![
                    // Parallel calls: only the first carries the signature.
                    ToolCallRequest {
                        id: "call_1".to_owned(),
                        name: "get_current_time".to_owned(),
                        arguments: json!({}),
                        signature: Some("CiQB0e2Kb8".to_owned()),
                    },
                    ToolCallRequest {
                        id: "call_2".to_owned(),
                        name: "get_weather".to_owned(),
                        arguments: json!({ "city": "Paris" }),
                        signature: None,
                    },
                ],
            },
            Turn::ToolResult {
                call_id: "call_1".to_owned(),
                name: "get_current_time".to_owned(),
                result: json!("12:00"),
            },
            Turn::ToolResult {
                call_id: "call_2".to_owned(),
                name: "get_weather".to_owned(),
                result: json!({ "sky": "clear" }),
            },
            Turn::Assistant {
                text: "Noon, and clear.".to_owned(),
                tool_calls: vec![],
            },
        ];
        let body = body(&request(turns, vec![time_tool(), weather_tool()]));
        assert_eq!(
            body,
            json!({
                "contents": [
                    { "role": "user", "parts": [{ "text": "Time and weather in Paris?" }] },
                    { "role": "model", "parts": [
                        { "functionCall": { "name": "get_current_time", "args": {} }, "thoughtSignature": "CiQB0e2Kb8" },
                        { "functionCall": { "name": "get_weather", "args": { "city": "Paris" } } },
                    ] },
                    { "role": "user", "parts": [
                        { "functionResponse": { "name": "get_current_time", "response": { "result": "12:00" } } },
                        { "functionResponse": { "name": "get_weather", "response": { "sky": "clear" } } },
                    ] },
                    { "role": "model", "parts": [{ "text": "Noon, and clear." }] },
                ],
                "systemInstruction": { "parts": [{ "text": "Be brief." }] },
                "generationConfig": { "temperature": 0.7, "maxOutputTokens": 1024 },
                "tools": [{ "functionDeclarations": [
                    { "name": "get_current_time", "description": "The current time." },
                    {
                        "name": "get_weather",
                        "description": "The weather in a city.",
                        "parameters": weather_tool().parameters,
                    },
                ] }],
            })
        );
    }

    #[test]
    fn no_tools_and_no_system_prompt_leave_their_fields_out() {
        let mut request = request(vec![Turn::User("Hi".to_owned())], vec![]);
        request.system.clear();
        let body = body(&request);
        assert!(body.get("tools").is_none());
        assert!(body.get("systemInstruction").is_none());
    }

    #[test]
    fn model_names_cannot_change_the_path() {
        assert_eq!(
            model_path("gemini-2.5-flash"),
            "/v1beta/models/gemini-2.5-flash"
        );
        assert_eq!(
            model_path("models/gemini-2.5-pro"),
            "/v1beta/models/gemini-2.5-pro"
        );
        assert_eq!(model_path("../x?y:z"), "/v1beta/models/..%2Fx%3Fy%3Az");
    }

    /// As `streamGenerateContent?alt=sse` sends it: `\r\n` line endings, usage in every event.
    const TOOL_CALL_REPLY: &str = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Let me check\", \"thought\": true}, {\"text\": \"Caf\u{e9} \u{2615} time\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 31,\"candidatesTokenCount\": 4,\"totalTokenCount\": 35},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n\
        data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"get_weather\",\"args\": {\"city\": \"Paris\"}},\"thoughtSignature\": \"CiQB0e2Kb8\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 31,\"candidatesTokenCount\": 9,\"totalTokenCount\": 76,\"thoughtsTokenCount\": 36},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n";

    #[tokio::test]
    async fn a_streamed_reply_with_a_tool_call_decodes() {
        let events = decode_all(TOOL_CALL_REPLY, decoder).await;
        assert_eq!(
            events,
            vec![
                Ok(StreamEvent::Text("Caf\u{e9} \u{2615} time".to_owned())),
                Ok(StreamEvent::ToolCall(ToolCallRequest {
                    id: "test_1".to_owned(),
                    name: "get_weather".to_owned(),
                    arguments: json!({ "city": "Paris" }),
                    signature: Some("CiQB0e2Kb8".to_owned()),
                })),
                Ok(StreamEvent::Usage {
                    input_tokens: 31,
                    output_tokens: 45,
                }),
                Ok(StreamEvent::Finished {
                    reason: Some("STOP".to_owned()),
                }),
            ]
        );
    }

    #[tokio::test]
    async fn text_arrives_event_by_event() {
        let reply = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hello\"}],\"role\": \"model\"}}]}\r\n\r\n\
                     data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" there.\"}],\"role\": \"model\"},\"finishReason\": \"MAX_TOKENS\"}]}\r\n\r\n";
        let events = decode_all(reply, decoder).await;
        assert_eq!(text_of(&events), "Hello there.");
        assert_eq!(
            events.last(),
            Some(&Ok(StreamEvent::Finished {
                reason: Some("MAX_TOKENS".to_owned())
            }))
        );
    }

    #[tokio::test]
    async fn a_blocked_prompt_finishes_with_the_block_reason() {
        let reply = "data: {\"promptFeedback\": {\"blockReason\": \"SAFETY\"},\"usageMetadata\": {\"promptTokenCount\": 8}}\r\n\r\n";
        assert_eq!(
            decode_all(reply, decoder).await,
            vec![
                Ok(StreamEvent::Usage {
                    input_tokens: 8,
                    output_tokens: 0
                }),
                Ok(StreamEvent::Finished {
                    reason: Some("SAFETY".to_owned())
                }),
            ]
        );
    }

    #[tokio::test]
    async fn errors_and_broken_streams_are_upstream_failures() {
        let text =
            "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hi\"}]}}]}\r\n\r\n";
        for (tail, expected) in [
            ("", "Gemini ended the reply before finishing it"),
            ("data: {\r\n\r\n", "Gemini sent a malformed event"),
            ("data: [1]\r\n\r\n", "Gemini sent a malformed event"),
            (
                "data: {\"error\": {\"code\": 500, \"message\": \"Internal error\", \"status\": \"INTERNAL\"}}\r\n\r\n",
                "Gemini reported an error: Internal error",
            ),
        ] {
            let events = decode_all(&format!("{text}{tail}"), decoder).await;
            assert_eq!(events.len(), 2, "{tail}");
            assert!(
                matches!(&events[1], Err(ProviderError::Upstream(message)) if message.starts_with(expected)),
                "{tail}: {events:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_exhausted_quota_mid_stream_is_a_rate_limit() {
        let reply = "data: {\"error\": {\"code\": 429, \"message\": \"Quota\", \"status\": \"RESOURCE_EXHAUSTED\"}}\r\n\r\n";
        assert_eq!(
            decode_all(reply, decoder).await,
            vec![Err(ProviderError::RateLimited {
                retry_after_seconds: 30
            })]
        );
    }

    #[test]
    fn only_key_errors_reject_the_key() {
        let invalid_key = json!({ "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }],
        } });
        let bad_request = json!({ "error": {
            "code": 400,
            "message": "* GenerateContentRequest.contents: contents is not specified",
            "status": "INVALID_ARGUMENT",
        } });
        assert!(rejects_key(&invalid_key));
        assert!(!rejects_key(&bad_request));
        assert!(!rejects_key(&Value::Null));
    }

    #[test]
    fn the_retry_delay_comes_from_retry_info() {
        let body = json!({ "error": { "code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
            { "@type": "type.googleapis.com/google.rpc.QuotaFailure" },
            { "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36.2s" },
        ] } });
        assert_eq!(retry_delay(&body), Some(37));
        assert_eq!(retry_delay(&json!({ "error": {} })), None);
    }

    #[test]
    fn a_whole_reply_is_its_answer_text_with_its_usage() {
        let reply: Chunk = serde_json::from_value(json!({
            "candidates": [{ "content": { "parts": [
                { "text": "Thinking…", "thought": true },
                { "text": "Paris " },
                { "text": "trip" },
            ], "role": "model" }, "finishReason": "STOP" }],
            "usageMetadata": { "promptTokenCount": 52, "candidatesTokenCount": 3, "thoughtsTokenCount": 4 },
        }))
        .expect("a reply");
        let completion = Completion {
            text: "Paris trip".to_owned(),
            usage: Some((52, 7)),
        };
        assert_eq!(reply_text(reply), Ok(completion));
        let empty: Chunk = serde_json::from_value(json!({ "candidates": [] })).expect("a reply");
        assert!(matches!(reply_text(empty), Err(ProviderError::Upstream(_))));
    }
}
